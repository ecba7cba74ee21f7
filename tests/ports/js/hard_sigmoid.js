'use strict';
// Broken: its gates use the hard sigmoid (clip(0.2 x + 0.5, 0, 1)), tf.layers.lstm's default
// recurrentActivation, instead of torch's logistic sigmoid: every value is slightly off.
const { serve } = require('../../../implementations/js/lstm-port.js');
const { lstm } = require('./scratch_lstm.js');

serve(lstm({ name: 'hard-sigmoid-js', gate: (x) => Math.min(1, Math.max(0, 0.2 * x + 0.5)) }));

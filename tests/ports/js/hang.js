'use strict';
// Broken: spins forever on every forward call (a deadlock in a native kernel), reading nothing more.
const { serve } = require('../../../implementations/js/lstm-port.js');
const { lstm } = require('./scratch_lstm.js');

const port = lstm({ name: 'hang-js' });
port.forward = () => {
  for (;;) { /* never returns */ }
};
serve(port);

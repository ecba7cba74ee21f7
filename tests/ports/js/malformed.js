'use strict';
// Broken: states h_n's shape with one more layer than its bytes hold (a reply whose bytes do not match
// the stated dtype and shape): a malformed reply.
const { serve } = require('../../../implementations/js/lstm-port.js');
const { lstm } = require('./scratch_lstm.js');

const port = lstm({ name: 'malformed-js' });
const forward = port.forward;
port.forward = (model, input, hx, training) => {
  const result = forward(model, input, hx, training);
  const { h_n: h } = result;
  result.h_n = { dtype: h.dtype, shape: [h.shape[0] + 1, ...h.shape.slice(1)], data: h.data };
  return result;
};
serve(port);

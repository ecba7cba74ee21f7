'use strict';
// Broken: a native addon that segfaults on packed input and on batches of 2 or more (here: the process
// sends itself SIGSEGV).
const { serve } = require('../../../implementations/js/lstm-port.js');
const { isPacked } = require('../../../implementations/js/lstm-layout.js');
const { lstm } = require('./scratch_lstm.js');

const port = lstm({ name: 'crash-js' });
const forward = port.forward;
port.forward = (model, input, hx, training) => {
  const batched = !isPacked(input) && input.shape.length === 3;
  if (isPacked(input) || (batched && input.shape[model.config.batch_first ? 0 : 1] >= 2)) {
    process.kill(process.pid, 'SIGSEGV');
  }
  return forward(model, input, hx, training);
};
serve(port);

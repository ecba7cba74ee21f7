'use strict';
/**
 * onnxruntime-node 1.30.0's LSTM operator (CPU) as an lstm-conformance process port: `node port.js`
 * (registered as `onnxruntime-node`). It runs the same graphs as the Python `onnxruntime` port
 * (onnx-graph.js writes them), on ONNX Runtime's Node.js binding.
 *
 * Packed input goes in as a padded batch plus `sequence_lens` (the operator's own mechanism); initial
 * states as each layer's rows of torch's h0 / c0. batch_first and unbatched input are layout changes done
 * here. Only what splitting the stacked states needs is checked here (lstm-layout.js splitHx); batch,
 * feature and dtype mismatches are ONNX Runtime's to reject.
 *
 * Sessions: one InferenceSession per model and call signature (with or without hx, with or without
 * sequence_lens), the plain one built when the model is constructed, the others on first use.
 *
 * What it lacks: float64 (ONNX Runtime's CPU LSTM kernel does not run double), proj_size (the operator
 * has no projection), dropout (the operator has none; a model is inference-only) and gradients (the
 * Node.js binding runs inference only). float16 graphs, which the same kernel runs (in float32, rounded
 * once), are checked through the Python `onnxruntime` port; this port does not write them yet, so it
 * declares float32 only.
 */

const path = require('path');
const ort = require('onnxruntime-node');

const helper = path.join(__dirname, '..');
const { serve, makeArray, toNumbers } = require(path.join(helper, 'lstm-port.js'));
const { timeMajor, torchLayout, rows } = require(path.join(helper, 'lstm-layout.js'));
const { lstmModel } = require('./onnx-graph.js');

const FEATURES = ['multi_layer', 'no_bias', 'batch_first', 'bidirectional', 'initial_state', 'unbatched', 'packed',
  'packed_unsorted', 'noncontiguous', 'requires_grad', 'argument_forms'];
const OPTIONS = { executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 };
const ORT_TYPES = { float16: 'float16', float32: 'float32', float64: 'float64', int32: 'int32', int64: 'int64' };

async function session(model, withHx, withLens) {
  const key = `${withHx}/${withLens}`;
  if (!model.sessions.has(key)) {
    const bytes = lstmModel(model.config, model.weights, withHx, withLens);
    model.sessions.set(key, await ort.InferenceSession.create(bytes, OPTIONS));
  }
  return model.sessions.get(key);
}

async function construct(config, weights) {
  const model = { config, weights, sessions: new Map() };
  await session(model, false, false);
  return model;
}

function release(model) {
  for (const s of model.sessions.values()) s.release();
}

/** An ONNX Runtime tensor holding an array as it is (its own dtype: a mismatch is the runtime's to reject). */
function feed(array) {
  const type = ORT_TYPES[array.dtype];
  if (type === undefined) return new ort.Tensor('float32', Float32Array.from(toNumbers(array)), array.shape);
  return new ort.Tensor(type, array.data, array.shape);
}

async function forward(model, input, hx, training) {
  void training; // inference-only: the operator has no dropout, declared absent
  const { config } = model;
  const directions = config.bidirectional ? 2 : 1;
  const { x, lengths, unbatched, state } = timeMajor(input, hx, config);
  const feeds = { X: feed(x) };
  if (lengths !== null) feeds.sequence_lens = new ort.Tensor('int32', Int32Array.from(lengths), [lengths.length]);
  if (state !== null) {
    for (let layer = 0; layer < config.num_layers; layer++) {
      feeds[`h0_${layer}`] = feed(rows(state[0], layer * directions, (layer + 1) * directions));
      feeds[`c0_${layer}`] = feed(rows(state[1], layer * directions, (layer + 1) * directions));
    }
  }
  const run = await session(model, state !== null, lengths !== null);
  const results = await run.run(feeds, ['output', 'h_n', 'c_n']);
  const array = (t) => makeArray('float32', t.dims.map(Number), Float32Array.from(t.data));
  return torchLayout(array(results.output), array(results.h_n), array(results.c_n), input, unbatched, config);
}

serve({
  name: 'onnxruntime-node',
  version: require('onnxruntime-node/package.json').version,
  capabilities: { features: FEATURES, dtypes: ['float32'], errors: 'raises', gradients: false },
  construct,
  release,
  forward,
});

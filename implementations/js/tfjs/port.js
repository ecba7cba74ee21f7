'use strict';
/**
 * TensorFlow.js's tf.layers.lstm (@tensorflow/tfjs 4.22.0, pure JavaScript, CPU backend) as an
 * lstm-conformance process port: `node port.js` (registered as `tfjs`).
 *
 * Weight mapping, per layer and direction: kernel = weight_ih transposed ([I, 4H]), recurrentKernel =
 * weight_hh transposed ([H, 4H]), one bias = bias_ih + bias_hh ([4H]); tfjs's gate order i, f, c, o is
 * torch's i, f, g, o. recurrentActivation is set to 'sigmoid' (tfjs's default is 'hardSigmoid').
 *
 * Layers: one tf.layers.lstm per layer and direction (returnSequences, returnState), the reverse one with
 * goBackwards and its output reversed back in time; the two directions' outputs concatenated; stacked
 * layers fed each other's output; in training mode a tf.layers.dropout between layers. Packed input goes
 * in as a padded batch with tfjs's own mask (masked steps keep the state); initial states through
 * `initialState`. batch_first and unbatched input are layout changes done here.
 *
 * What it lacks: float64 (tfjs has no float64 dtype: float32, int32, bool, complex64, string), proj_size
 * (tf.layers.lstm has no projection) and gradients (not wired up: tfjs's autodiff would need a backward
 * request handler).
 */

const path = require('path');
const tf = require('@tensorflow/tfjs');

const helper = path.join(__dirname, '..');
const { serve, toNumbers, makeArray } = require(path.join(helper, 'lstm-port.js'));
const { timeMajor, torchLayout } = require(path.join(helper, 'lstm-layout.js'));

const FEATURES = ['multi_layer', 'no_bias', 'batch_first', 'bidirectional', 'initial_state', 'unbatched', 'packed',
  'packed_unsorted', 'dropout', 'noncontiguous', 'requires_grad', 'argument_forms'];

/** A tensor of the values an array holds, as tfjs makes it from them (it infers the dtype). */
function tensor(array) {
  const floats = array.dtype === 'float32' || array.dtype === 'float64';
  return tf.tensor(floats ? array.data : toNumbers(array), array.shape);
}

function transposed(array) {
  return tf.tidy(() => tensor(array).transpose());
}

/** One layer and direction: a built tf.layers.lstm holding torch's weights. */
function lstmLayer(config, weights, layer, suffix, features) {
  const cell = tf.layers.lstm({
    units: config.hidden_size, returnSequences: true, returnState: true, recurrentActivation: 'sigmoid',
    useBias: config.bias, goBackwards: suffix === '_reverse',
    // torch's weights replace these at once; the default orthogonal initializer takes minutes on large kernels
    kernelInitializer: 'zeros', recurrentInitializer: 'zeros', biasInitializer: 'zeros',
  });
  tf.tidy(() => cell.apply(tf.zeros([1, 1, features]))); // builds the weights
  const name = (kind) => `${kind}_l${layer}${suffix}`;
  const values = [transposed(weights[name('weight_ih')]), transposed(weights[name('weight_hh')])];
  if (config.bias) {
    const ih = toNumbers(weights[name('bias_ih')]);
    const hh = toNumbers(weights[name('bias_hh')]);
    values.push(tf.tensor1d(Float32Array.from(ih, (v, k) => v + hh[k])));
  }
  cell.setWeights(values);
  values.forEach((v) => v.dispose());
  return cell;
}

function construct(config, weights) {
  const directions = config.bidirectional ? 2 : 1;
  const layers = [];
  for (let layer = 0; layer < config.num_layers; layer++) {
    const features = layer === 0 ? config.input_size : directions * config.hidden_size;
    layers.push(['', '_reverse'].slice(0, directions).map((s) => lstmLayer(config, weights, layer, s, features)));
  }
  const dropout = tf.layers.dropout({ rate: config.dropout });
  return { config, layers, dropout };
}

function release(model) {
  model.layers.flat().forEach((layer) => layer.dispose());
}

/** A float32 array holding a tensor's values. */
function toArray(t) {
  return makeArray('float32', t.shape, Float32Array.from(t.dataSync()));
}

function forward(model, input, hx, training) {
  const { config } = model;
  const { x, lengths, unbatched, state } = timeMajor(input, hx, config);
  const directions = config.bidirectional ? 2 : 1;
  const result = tf.tidy(() => {
    let sequence = tensor(x).transpose([1, 0, 2]); // tfjs is batch-major: [N, T, F]
    const [batch, steps] = sequence.shape;
    const mask = lengths === null ? undefined
      : tf.tensor2d(lengths.flatMap((n) => Array.from({ length: steps }, (_, t) => (t < n ? 1 : 0))), [batch, steps], 'bool');
    const states = state === null ? null : state.map(tensor);
    const hN = [];
    const cN = [];
    model.layers.forEach((cells, layer) => {
      const outputs = cells.map((cell, d) => {
        const row = layer * directions + d;
        const initialState = states === null ? undefined : states.map((s) => s.slice([row, 0, 0], [1, -1, -1]).squeeze([0]));
        const [output, h, c] = cell.apply(sequence, { initialState, mask });
        hN.push(h);
        cN.push(c);
        return d === 1 ? tf.reverse(output, 1) : output; // goBackwards yields the steps in processing order
      });
      sequence = outputs.length === 1 ? outputs[0] : tf.concat(outputs, 2);
      if (training && config.dropout > 0 && layer < model.layers.length - 1) {
        sequence = model.dropout.apply(sequence, { training: true });
      }
    });
    return { output: sequence.transpose([1, 0, 2]), h_n: tf.stack(hN), c_n: tf.stack(cN) };
  });
  const arrays = { output: toArray(result.output), h_n: toArray(result.h_n), c_n: toArray(result.c_n) };
  Object.values(result).forEach((t) => t.dispose());
  return torchLayout(arrays.output, arrays.h_n, arrays.c_n, input, unbatched, config);
}

serve({
  name: 'tfjs',
  version: tf.version.tfjs,
  capabilities: { features: FEATURES, dtypes: ['float32'], errors: 'raises', gradients: false },
  construct,
  release,
  forward,
});

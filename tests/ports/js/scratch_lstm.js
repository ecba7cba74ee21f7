'use strict';
/**
 * A correct LSTM port in plain JavaScript (no packages): every feature of torch.nn.LSTM, float32 and
 * float64, torch's checks of a call, dropout masks from Math.random. It computes in float64 and rounds
 * the results to the model's dtype (more accurate than torch for float32 models, which the suite allows).
 *
 * Run as a port: `node scratch_lstm.js`. The broken ports next to it require it and change one thing
 * (see lstm(options) below).
 */

const path = require('path');

const helper = path.join(__dirname, '..', '..', '..', 'implementations', 'js');
const { serve, toNumbers, fromNumbers } = require(path.join(helper, 'lstm-port.js'));
const { checkCall, timeMajor, torchLayout } = require(path.join(helper, 'lstm-layout.js'));

const FEATURES = ['multi_layer', 'no_bias', 'batch_first', 'bidirectional', 'proj_size', 'initial_state',
  'unbatched', 'packed', 'packed_unsorted', 'dropout', 'noncontiguous', 'requires_grad', 'argument_forms'];

const sigmoid = (x) => 1 / (1 + Math.exp(-x));

/** The weights of one layer and direction, as plain numbers in torch's layout. */
function directionWeights(weights, config, layer, suffix) {
  const get = (kind) => toNumbers(weights[`${kind}_l${layer}${suffix}`]);
  return {
    wih: get('weight_ih'), whh: get('weight_hh'),
    bih: config.bias ? get('bias_ih') : null, bhh: config.bias ? get('bias_hh') : null,
    whr: config.proj_size > 0 ? get('weight_hr') : null,
  };
}

/** One direction of one layer over a (T, N, F) input given as numbers; writes into `out` (T, N, D * P). */
function runDirection(w, x, dims, lengths, h0, c0, reverse, out, column, options) {
  const { steps, batch, features, hidden, size, width } = dims;
  const hN = new Float64Array(batch * size);
  const cN = new Float64Array(batch * hidden);
  const gates = new Float64Array(4 * hidden);
  for (let b = 0; b < batch; b++) {
    let h = h0.slice(b * size, (b + 1) * size);
    const c = c0.slice(b * hidden, (b + 1) * hidden);
    const length = lengths === null ? steps : lengths[b];
    for (let k = 0; k < length; k++) {
      const t = reverse ? length - 1 - k : k;
      const xt = x.subarray((t * batch + b) * features, (t * batch + b + 1) * features);
      for (let g = 0; g < 4 * hidden; g++) {
        let sum = w.bih === null ? 0 : w.bih[g] + w.bhh[g];
        for (let j = 0; j < features; j++) sum += w.wih[g * features + j] * xt[j];
        for (let j = 0; j < size; j++) sum += w.whh[g * size + j] * h[j];
        gates[g] = sum;
      }
      const cell = new Float64Array(hidden);
      for (let u = 0; u < hidden; u++) {
        const i = options.gate(gates[u]);
        const f = options.gate(gates[hidden + u]);
        const g = Math.tanh(gates[2 * hidden + u]);
        const o = options.gate(gates[3 * hidden + u]);
        c[u] = f * c[u] + i * g;
        cell[u] = o * Math.tanh(c[u]);
      }
      if (w.whr === null) {
        h = cell;
      } else {
        h = new Float64Array(size);
        for (let p = 0; p < size; p++) {
          let sum = 0;
          for (let u = 0; u < hidden; u++) sum += w.whr[p * hidden + u] * cell[u];
          h[p] = sum;
        }
      }
      out.set(h, (t * batch + b) * width + column);
    }
    hN.set(h, b * size);
    cN.set(c, b * hidden);
  }
  return { hN, cN };
}

/** The port: `options.gate` is the gates' activation (torch: the logistic sigmoid). */
function lstm(options = {}) {
  const settings = { gate: sigmoid, ...options };
  return {
    name: settings.name || 'scratch-lstm-js',
    version: '1.0.0',
    capabilities: { features: FEATURES, dtypes: ['float32', 'float64'], errors: 'raises', gradients: false },
    forward(model, input, hx, training) {
      const { config, weights } = model;
      checkCall(config, input, hx);
      const { x, lengths, unbatched, state } = timeMajor(input, hx, config);
      const [steps, batch] = x.shape;
      const directions = config.bidirectional ? 2 : 1;
      const hidden = config.hidden_size;
      const size = config.proj_size > 0 ? config.proj_size : hidden;
      const layers = config.num_layers;
      const h0 = state === null ? new Float64Array(layers * directions * batch * size) : toNumbers(state[0]);
      const c0 = state === null ? new Float64Array(layers * directions * batch * hidden) : toNumbers(state[1]);
      const hN = new Float64Array(layers * directions * batch * size);
      const cN = new Float64Array(layers * directions * batch * hidden);
      let layerInput = toNumbers(x);
      let features = config.input_size;
      for (let layer = 0; layer < layers; layer++) {
        const width = directions * size;
        const out = new Float64Array(steps * batch * width);
        for (let d = 0; d < directions; d++) {
          const w = directionWeights(weights, config, layer, d === 1 ? '_reverse' : '');
          const k = layer * directions + d;
          const dims = { steps, batch, features, hidden, size, width };
          const { hN: h, cN: c } = runDirection(w, layerInput, dims, lengths,
            h0.subarray(k * batch * size, (k + 1) * batch * size), c0.subarray(k * batch * hidden, (k + 1) * batch * hidden),
            d === 1, out, d * size, settings);
          hN.set(h, k * batch * size);
          cN.set(c, k * batch * hidden);
        }
        if (training && config.dropout > 0 && layer < layers - 1) {
          const scale = 1 / (1 - config.dropout);
          for (let j = 0; j < out.length; j++) out[j] *= Math.random() < config.dropout ? 0 : scale; // 0 * NaN is NaN, as in torch
        }
        layerInput = out;
        features = width;
      }
      const output = fromNumbers(layerInput, config.dtype, [steps, batch, features]);
      return torchLayout(output, fromNumbers(hN, config.dtype, [layers * directions, batch, size]),
        fromNumbers(cN, config.dtype, [layers * directions, batch, hidden]), input, unbatched, config);
    },
  };
}

module.exports = { lstm, sigmoid };

if (require.main === module) serve(lstm());

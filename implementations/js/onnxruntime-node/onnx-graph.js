'use strict';
/**
 * torch.nn.LSTM as an ONNX graph, written as protobuf bytes without a protobuf library: the same graph
 * the Python port builds with onnx.helper (implementations/onnxruntime_lstm.py, `_model`), field for
 * field, so that the two ports run the same model on two runtimes (tests/test_process_ports.py parses
 * these bytes with onnx and compares them with the Python port's model).
 *
 * Per layer: one LSTM node (W and R with torch's gate blocks [i, f, g, o] reordered to ONNX's
 * [i, o, f, c], B = [bias_ih, bias_hh] in the same order, direction "bidirectional" or "forward"),
 * then Transpose and Reshape turning Y [T, D, N, H] into the next layer's [T, N, D * H]; the layers'
 * Y_h and Y_c concatenated into torch's (num_layers * D, N, H). Opset 21, IR version 10 (onnxruntime-node
 * 1.30 rejects IR version 14).
 */

const { toNumbers } = require('../lstm-port.js');

const OPSET = 21;
const IR_VERSION = 10;
const GATE_ORDER = [0, 3, 1, 2]; // torch's blocks [i, f, g, o] in ONNX's order [i, o, f, c]
const TYPES = { float32: 1, int32: 6, int64: 7, float64: 11 }; // TensorProto.DataType
const ATTRIBUTE = { INT: 2, STRING: 3, INTS: 7 }; // AttributeProto.AttributeType

// ----------------------------------------------------------------------------- protobuf writing
function varint(value) {
  if (!Number.isInteger(value) || value < 0) throw new Error(`varint of ${value}: only whole numbers >= 0`);
  const bytes = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A message: [field, value] pairs in order; a value is a number (varint), a string, a Buffer or a message. */
function message(fields) {
  const parts = [];
  for (const [field, value] of fields) {
    if (value === undefined) continue;
    if (typeof value === 'number') {
      parts.push(varint(field * 8), varint(value));
    } else {
      const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
      parts.push(varint(field * 8 + 2), varint(bytes.length), bytes);
    }
  }
  return Buffer.concat(parts);
}

const repeated = (field, values) => values.map((v) => [field, v]);

function tensorProto(name, type, dims, raw) {
  return message([...repeated(1, dims), [2, TYPES[type]], [8, name], [9, raw]]);
}

function valueInfo(name, type, shape) {
  const dims = shape.map((d) => [1, message([typeof d === 'number' ? [1, d] : [2, d]])]);
  const tensorType = message([[1, TYPES[type]], [2, message(dims)]]);
  return message([[1, name], [2, message([[1, tensorType]])]]);
}

function node(opType, inputs, outputs, name, attributes = []) {
  return message([...repeated(1, inputs), ...repeated(2, outputs), [3, name], [4, opType],
    ...attributes.map((a) => [5, a])]);
}

const intAttribute = (name, value) => message([[1, name], [3, value], [20, ATTRIBUTE.INT]]);
const stringAttribute = (name, value) => message([[1, name], [4, value], [20, ATTRIBUTE.STRING]]);
const intsAttribute = (name, values) => message([[1, name], ...repeated(8, values), [20, ATTRIBUTE.INTS]]);

// ----------------------------------------------------------------------------- the graph
/** torch's weight (4H, ...) with its gate blocks in ONNX's order, as float32 numbers. */
function reordered(array) {
  const values = toNumbers(array);
  const block = values.length / 4;
  const out = new Float32Array(values.length);
  GATE_ORDER.forEach((k, position) => out.set(values.subarray(k * block, (k + 1) * block), position * block));
  return out;
}

const bytesOf = (typed) => Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);

function stacked(parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Float32Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function initializers(config, weights, layer) {
  const directions = config.bidirectional ? 2 : 1;
  const suffixes = ['', '_reverse'].slice(0, directions);
  const H = config.hidden_size;
  const features = layer === 0 ? config.input_size : directions * H;
  const get = (kind) => suffixes.map((s) => reordered(weights[`${kind}_l${layer}${s}`]));
  const tensors = [
    tensorProto(`W_${layer}`, 'float32', [directions, 4 * H, features], bytesOf(stacked(get('weight_ih')))),
    tensorProto(`R_${layer}`, 'float32', [directions, 4 * H, H], bytesOf(stacked(get('weight_hh')))),
  ];
  if (config.bias) {
    const ih = get('bias_ih');
    const hh = get('bias_hh');
    const bias = stacked(suffixes.flatMap((_, d) => [ih[d], hh[d]])); // (D, 8H)
    tensors.push(tensorProto(`B_${layer}`, 'float32', [directions, 8 * H], bytesOf(bias)));
  }
  return tensors;
}

/** The model's bytes: float32, with or without initial states and sequence lengths as inputs. */
function lstmModel(config, weights, withHx, withLens) {
  const directions = config.bidirectional ? 2 : 1;
  const H = config.hidden_size;
  const inputs = [valueInfo('X', 'float32', ['T', 'N', config.input_size])];
  if (withLens) inputs.push(valueInfo('sequence_lens', 'int32', ['N']));
  const merge = BigInt64Array.from([0n, 0n, BigInt(directions * H)]);
  const tensors = [tensorProto('merge_shape', 'int64', [3], bytesOf(merge))];
  const nodes = [];
  let layerInput = 'X';
  for (let layer = 0; layer < config.num_layers; layer++) {
    tensors.push(...initializers(config, weights, layer));
    if (withHx) {
      inputs.push(valueInfo(`h0_${layer}`, 'float32', [directions, 'N', H]),
        valueInfo(`c0_${layer}`, 'float32', [directions, 'N', H]));
    }
    const nodeInputs = [layerInput, `W_${layer}`, `R_${layer}`, config.bias ? `B_${layer}` : '',
      withLens ? 'sequence_lens' : '', withHx ? `h0_${layer}` : '', withHx ? `c0_${layer}` : ''];
    while (nodeInputs[nodeInputs.length - 1] === '') nodeInputs.pop();
    nodes.push(node('LSTM', nodeInputs, [`Y_${layer}`, `Yh_${layer}`, `Yc_${layer}`], `lstm_${layer}`,
      [stringAttribute('direction', config.bidirectional ? 'bidirectional' : 'forward'), intAttribute('hidden_size', H)]));
    nodes.push(node('Transpose', [`Y_${layer}`], [`Yt_${layer}`], undefined, [intsAttribute('perm', [0, 2, 1, 3])]));
    nodes.push(node('Reshape', [`Yt_${layer}`, 'merge_shape'], [`out_${layer}`]));
    layerInput = `out_${layer}`;
  }
  nodes.push(node('Identity', [layerInput], ['output']));
  for (const [name, part] of [['h_n', 'Yh'], ['c_n', 'Yc']]) {
    const parts = Array.from({ length: config.num_layers }, (_, k) => `${part}_${k}`);
    nodes.push(node('Concat', parts, [name], undefined, [intAttribute('axis', 0)]));
  }
  const outputs = [valueInfo('output', 'float32', ['T', 'N', directions * H]),
    valueInfo('h_n', 'float32', [config.num_layers * directions, 'N', H]),
    valueInfo('c_n', 'float32', [config.num_layers * directions, 'N', H])];
  const graph = message([...repeated(1, nodes), [2, 'torch_lstm'], ...repeated(5, tensors),
    ...repeated(11, inputs), ...repeated(12, outputs)]);
  const opset = message([[1, ''], [2, OPSET]]);
  return message([[1, IR_VERSION], [2, 'lstm-conformance'], [7, graph], [8, opset]]);
}

module.exports = { lstmModel, OPSET, IR_VERSION };

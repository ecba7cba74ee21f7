'use strict';
/**
 * The port side of the lstm-conformance process protocol (docs/process-protocol.md), for Node.js.
 *
 * A port calls serve() with its name, version, capabilities and a forward function; this module reads
 * the suite's frames from stdin, answers each on stdout, and turns what the functions return or throw
 * into replies. No dependencies.
 *
 *     const { serve, PortError } = require('./lstm-port.js');
 *     serve({
 *       name: 'my-port', version: '1.0.0',
 *       capabilities: { features: ['multi_layer', 'batch_first'], dtypes: ['float32'], errors: 'raises',
 *                       gradients: false },
 *       construct(config, weights) { return buildModel(config, weights); },   // optional
 *       release(model) { model.dispose(); },                                   // optional
 *       forward(model, input, hx, training) { return { output, h_n, c_n }; },  // may return a Promise
 *     });
 *
 * Arrays are { dtype, shape, data }: data is a Float32Array (float32), Float64Array (float64), Int32Array
 * (int32), BigInt64Array (int64), or a Uint16Array of raw bit patterns (float16, bfloat16; see toNumbers).
 * A packed input or output is { data, batch_sizes, sorted_indices, unsorted_indices } (indices may be null).
 * Throw new PortError('ValueError', message) to raise a Python exception type by name (any thrown Error
 * is sent with its name: Error, TypeError, RangeError), or new Unsupported(reason) to answer "unsupported".
 *
 * stdout carries frames only: console.log and writes to process.stdout go to stderr once serve() runs.
 */

const PROTOCOL_VERSION = 1;
const TYPED = {
  float16: Uint16Array, bfloat16: Uint16Array, float32: Float32Array, float64: Float64Array,
  int32: Int32Array, int64: BigInt64Array,
};

class PortError extends Error {
  /** An exception the suite sees under `type` (Python's names: ValueError, RuntimeError, TypeError...). */
  constructor(type, message) {
    super(message);
    this.name = type;
  }
}

class Unsupported extends Error {
  /** Answered as "unsupported": this port does not do what the request asks. */
  constructor(reason) {
    super(reason);
    this.name = 'Unsupported';
  }
}

// ----------------------------------------------------------------------------- arrays
function makeArray(dtype, shape, data) {
  if (!(dtype in TYPED)) throw new PortError('TypeError', `unknown dtype ${dtype}`);
  const size = shape.reduce((a, b) => a * b, 1);
  if (data === undefined) data = new TYPED[dtype](size);
  if (!(data instanceof TYPED[dtype]) || data.length !== size) {
    throw new PortError('ValueError', `an array of dtype ${dtype} and shape [${shape}] needs a ` +
      `${TYPED[dtype].name} of ${size} elements`);
  }
  return { dtype, shape: shape.slice(), data };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function float16ToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

function bfloat16ToNumber(bits) {
  u32[0] = bits << 16;
  return f32[0];
}

function numberToBfloat16(value) {
  f32[0] = value;
  const bits = u32[0];
  if (Number.isNaN(value)) return (bits >>> 16) | 0x40; // a quiet NaN keeps its sign
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff; // round to nearest even
}

function numberToFloat16(value) {
  f32[0] = value;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  if (Number.isNaN(value)) return sign | 0x7e00;
  const magnitude = Math.abs(value);
  if (magnitude >= 65520) return sign | 0x7c00; // rounds past the largest float16: infinity
  if (magnitude < 2 ** -14) return sign | roundHalfEven(magnitude * 2 ** 24); // subnormal (1024: the smallest normal)
  const exponent = Math.floor(Math.log2(magnitude));
  const fraction = roundHalfEven((magnitude / 2 ** exponent) * 1024 - 1024); // the significand is in [1, 2)
  return sign + (exponent + 15) * 1024 + fraction; // a carry into the exponent is right as it is
}

function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  return rest > 0.5 || (rest === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
}

/** An array's values as plain numbers (Float64Array), whatever its dtype. */
function toNumbers(array) {
  const { dtype, data } = array;
  if (dtype === 'float16') return Float64Array.from(data, float16ToNumber);
  if (dtype === 'bfloat16') return Float64Array.from(data, bfloat16ToNumber);
  if (dtype === 'int64') return Float64Array.from(data, Number);
  return Float64Array.from(data);
}

/** An array of `dtype` (rounded to it) holding `values` (any array of numbers) in `shape`. */
function fromNumbers(values, dtype, shape) {
  let data;
  if (dtype === 'float16') data = Uint16Array.from(values, numberToFloat16);
  else if (dtype === 'bfloat16') data = Uint16Array.from(values, numberToBfloat16);
  else if (dtype === 'int64') data = BigInt64Array.from(values, (v) => BigInt(Math.trunc(v)));
  else data = TYPED[dtype].from(values);
  return makeArray(dtype, shape, data);
}

function isArray(value) {
  return value !== null && typeof value === 'object' && typeof value.dtype === 'string' &&
    Array.isArray(value.shape) && ArrayBuffer.isView(value.data);
}

// ----------------------------------------------------------------------------- messages
function decodeMessage(body) {
  const length = body.readUInt32LE(0);
  const document = JSON.parse(body.toString('utf8', 4, 4 + length));
  const binary = body.subarray(4 + length);
  const walk = (value) => {
    if (Array.isArray(value)) return value.map(walk);
    if (value === null || typeof value !== 'object') return value;
    if ('$array' in value) {
      const Typed = TYPED[value.$array];
      const bytes = binary.subarray(value.offset, value.offset + value.nbytes);
      const copy = new Uint8Array(bytes.length); // aligned, and ours to keep
      copy.set(bytes);
      return makeArray(value.$array, value.shape, new Typed(copy.buffer));
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v)]));
  };
  return walk(document);
}

function encodeMessage(message) {
  const chunks = [];
  let offset = 0;
  const walk = (value) => {
    if (isArray(value)) {
      const bytes = Buffer.from(value.data.buffer, value.data.byteOffset, value.data.byteLength);
      const descriptor = { $array: value.dtype, shape: value.shape, offset, nbytes: bytes.length };
      chunks.push(bytes);
      offset += bytes.length;
      return descriptor;
    }
    if (Array.isArray(value)) return value.map(walk);
    if (value === null || typeof value !== 'object') return value;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v)]));
  };
  const text = Buffer.from(JSON.stringify(walk(message)), 'utf8');
  const header = Buffer.alloc(8);
  header.writeUInt32LE(4 + text.length + offset, 0);
  header.writeUInt32LE(text.length, 4);
  return Buffer.concat([header, text, ...chunks]);
}

// ----------------------------------------------------------------------------- serving
/** Read frames from stdin, answer each in order; exit on end of input or a stop request. */
function serve(port) {
  const writeFrame = process.stdout.write.bind(process.stdout);
  const toStderr = (...args) => console.error(...args);
  console.log = console.info = console.debug = toStderr; // stdout carries frames only
  process.stdout.write = (chunk, ...rest) => process.stderr.write(chunk, ...rest);

  const models = new Map();
  const send = (message) => writeFrame(encodeMessage(message));

  async function handle(message) {
    const id = message.id;
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000; // the port's own time, for the benchmark
    try {
      switch (message.type) {
        case 'start':
          return send({
            type: 'started', id, protocol: PROTOCOL_VERSION,
            port: { name: port.name, version: port.version, language: 'javascript', runtime: `node ${process.version}` },
            capabilities: port.capabilities,
          });
        case 'construct': {
          for (const released of message.release) {
            if (port.release && models.has(released)) port.release(models.get(released));
            models.delete(released);
          }
          const model = port.construct ? await port.construct(message.config, message.weights)
            : { config: message.config, weights: message.weights };
          models.set(message.model, model);
          return send({ type: 'constructed', id, seconds: seconds() });
        }
        case 'forward': {
          const result = await port.forward(modelFor(message), message.input, message.hx, message.training);
          return send({ type: 'result', id, output: result.output, h_n: result.h_n, c_n: result.c_n, seconds: seconds() });
        }
        case 'backward': {
          if (!port.backward) throw new Unsupported('this port declares no gradients');
          const gradients = await port.backward(modelFor(message), message.input, message.hx, message.cotangents,
            message.training);
          return send({ type: 'gradients', id, gradients, seconds: seconds() });
        }
        case 'stop':
          return process.exit(0);
        default:
          throw new Unsupported(`unknown request type ${JSON.stringify(message.type)}`);
      }
    } catch (error) {
      if (error instanceof Unsupported) return send({ type: 'unsupported', id, reason: error.message });
      const type = (error && error.name) || 'Error';
      return send({ type: 'error', id, error: { type, message: String((error && error.message) ?? error) }, seconds: seconds() });
    }
  }

  function modelFor(message) {
    if (!models.has(message.model)) throw new PortError('RuntimeError', `no model ${message.model} was constructed`);
    return models.get(message.model);
  }

  const pending = [];
  let buffered = 0;
  let queue = Promise.resolve();
  process.stdin.on('data', (chunk) => {
    pending.push(chunk);
    buffered += chunk.length;
    for (;;) {
      if (buffered < 4) return;
      let data = pending.length === 1 ? pending[0] : Buffer.concat(pending);
      pending.length = 0;
      pending.push(data);
      const length = data.readUInt32LE(0);
      if (buffered < 4 + length) return;
      const body = data.subarray(4, 4 + length);
      data = data.subarray(4 + length);
      pending[0] = data;
      buffered = data.length;
      queue = queue.then(() => handle(decodeMessage(body)));
    }
  });
  process.stdin.on('end', () => queue.then(() => process.exit(0)));
}

module.exports = {
  PROTOCOL_VERSION, PortError, Unsupported, serve, makeArray, toNumbers, fromNumbers, isArray,
  encodeMessage, decodeMessage, float16ToNumber, bfloat16ToNumber, numberToFloat16, numberToBfloat16,
};

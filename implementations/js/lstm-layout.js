'use strict';
/**
 * torch.nn.LSTM's layouts for JavaScript ports: packed <-> padded, time-major input and per-layer states,
 * and (for ports that want them) torch's own checks of a call. The counterpart of the Python side's
 * conformance/arrays.py and implementations/_layout.py. Arrays are lstm-port.js's { dtype, shape, data }.
 */

const { PortError, makeArray, toNumbers } = require('./lstm-port.js');

const size = (shape) => shape.reduce((a, b) => a * b, 1);

/** A new array: `array` (3-D) with its first two axes exchanged. */
function swap01(array) {
  const [a, b, c] = array.shape;
  const out = makeArray(array.dtype, [b, a, c]);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      out.data.set(array.data.subarray((i * b + j) * c, (i * b + j + 1) * c), (j * a + i) * c);
    }
  }
  return out;
}

/** A new array: `array` with an axis of length 1 inserted at `axis`. */
function expandDims(array, axis) {
  const shape = array.shape.slice();
  shape.splice(axis, 0, 1);
  return makeArray(array.dtype, shape, array.data.slice());
}

/** A new array: `array` without its axis `axis` of length 1. */
function squeeze(array, axis) {
  const shape = array.shape.slice();
  shape.splice(axis, 1);
  return makeArray(array.dtype, shape, array.data.slice());
}

/** Rows `start .. end` of an array's first axis, as a new array. */
function rows(array, start, end) {
  const inner = size(array.shape.slice(1));
  return makeArray(array.dtype, [end - start, ...array.shape.slice(1)], array.data.slice(start * inner, end * inner));
}

function isPacked(input) {
  return input !== null && typeof input === 'object' && 'batch_sizes' in input;
}

function integers(array) {
  return Array.from(toNumbers(array));
}

/** Throws ValueError unless a packed batch's parts fit together as torch's packing functions make them. */
function checkPacked(packed) {
  const { data, batch_sizes: counts } = packed;
  if (data.shape.length !== 2) throw new PortError('ValueError', `packed data must be 2-D (rows, features), got shape [${data.shape}]`);
  const sizes = integers(counts);
  if (counts.shape.length !== 1 || sizes.length === 0 || counts.dtype !== 'int64') {
    throw new PortError('ValueError', `batch_sizes must be a non-empty 1-D int64 array, got shape [${counts.shape}] ${counts.dtype}`);
  }
  const total = sizes.reduce((a, b) => a + b, 0);
  if (sizes[sizes.length - 1] <= 0 || sizes.some((s, t) => t > 0 && s > sizes[t - 1]) || total !== data.shape[0]) {
    throw new PortError('ValueError', `batch_sizes [${sizes}] must be positive, non-increasing and count the ` +
      `${data.shape[0]} rows of the packed data`);
  }
  const { sorted_indices: sorted, unsorted_indices: unsorted } = packed;
  if (sorted == null && unsorted == null) return;
  const batch = sizes[0];
  const order = (a) => (a == null ? null : integers(a));
  const [s, u] = [order(sorted), order(unsorted)];
  const permutation = (o) => o !== null && o.length === batch && [...o].sort((a, b) => a - b).every((v, k) => v === k);
  if (!permutation(s) || !permutation(u) || !s.every((v, k) => u[v] === k)) {
    throw new PortError('ValueError', `sorted_indices and unsorted_indices must be inverse permutations of the batch of ${batch}`);
  }
}

/** { padded, lengths }: a time-major (T, N, F) array in the caller's batch order, and each sequence's length. */
function packedToPadded(packed) {
  checkPacked(packed);
  const sizes = integers(packed.batch_sizes);
  const steps = sizes.length;
  const batch = sizes[0];
  const features = packed.data.shape[1];
  const sortedIndices = packed.sorted_indices == null ? null : integers(packed.sorted_indices);
  const padded = makeArray(packed.data.dtype, [steps, batch, features]);
  const lengths = new Array(batch).fill(0);
  let row = 0;
  for (let t = 0; t < steps; t++) {
    for (let k = 0; k < sizes[t]; k++, row++) {
      const b = sortedIndices === null ? k : sortedIndices[k]; // sorted row k is the caller's row b
      padded.data.set(packed.data.data.subarray(row * features, (row + 1) * features), (t * batch + b) * features);
      lengths[b] += 1;
    }
  }
  return { padded, lengths };
}

/** A time-major (T, N, F) array in the caller's batch order, packed with `like`'s structure. */
function paddedToPacked(padded, like) {
  const sizes = integers(like.batch_sizes);
  const [, batch, features] = padded.shape;
  const sortedIndices = like.sorted_indices == null ? null : integers(like.sorted_indices);
  const total = sizes.reduce((a, b) => a + b, 0);
  const data = makeArray(padded.dtype, [total, features]);
  let row = 0;
  for (let t = 0; t < sizes.length; t++) {
    for (let k = 0; k < sizes[t]; k++, row++) {
      const b = sortedIndices === null ? k : sortedIndices[k];
      data.data.set(padded.data.subarray((t * batch + b) * features, (t * batch + b + 1) * features), row * features);
    }
  }
  return { data, batch_sizes: like.batch_sizes, sorted_indices: like.sorted_indices, unsorted_indices: like.unsorted_indices };
}

/**
 * torch's (h0, c0) as two arrays; only what a layer-by-layer split needs is checked: a pair of arrays of
 * the right rank with num_layers * D rows (batch, feature and dtype mismatches are left to the port).
 */
function splitHx(hx, rank, states) {
  if (hx === null || hx === undefined) return null;
  if (!Array.isArray(hx) || hx.length !== 2) {
    throw new PortError('TypeError', `hx must be a tuple (h0, c0) of two arrays, got ${Array.isArray(hx) ? `${hx.length} items` : 'one array'}`);
  }
  hx.forEach((state, k) => {
    const name = k === 0 ? 'h0' : 'c0';
    if (state === null) throw new PortError('TypeError', `${name} must be an array`);
    if (state.shape.length !== rank) throw new PortError('RuntimeError', `${name} must be ${rank}-D, got ${state.shape.length}-D`);
    if (state.shape[0] !== states) {
      throw new PortError('RuntimeError', `${name} must have num_layers * num_directions = ${states} rows, got ${state.shape[0]}`);
    }
  });
  return hx;
}

/**
 * { x, lengths, unbatched, state }: x time-major (T, N, F); lengths for packed input (else null); state
 * [h0, c0] as (num_layers * D, N, .) arrays (an unbatched call's states get their batch axis back).
 */
function timeMajor(input, hx, config) {
  const directions = config.bidirectional ? 2 : 1;
  let x;
  let lengths = null;
  let unbatched = false;
  if (isPacked(input)) {
    ({ padded: x, lengths } = packedToPadded(input));
  } else {
    if (input.shape.length !== 2 && input.shape.length !== 3) {
      throw new PortError('ValueError', `LSTM: expected 2-D (unbatched) or 3-D input, got ${input.shape.length}-D`);
    }
    unbatched = input.shape.length === 2;
    if (unbatched) x = expandDims(input, 1);
    else x = config.batch_first ? swap01(input) : input;
  }
  let state = splitHx(hx, unbatched ? 2 : 3, config.num_layers * directions);
  if (state !== null && unbatched) state = state.map((s) => expandDims(s, 1));
  return { x, lengths, unbatched, state };
}

/** The inverse of timeMajor: a (T, N, F) output and (L * D, N, .) states as torch returns them. */
function torchLayout(output, h_n, c_n, input, unbatched, config) {
  if (isPacked(input)) return { output: paddedToPacked(output, input), h_n, c_n };
  if (unbatched) return { output: squeeze(output, 1), h_n: squeeze(h_n, 1), c_n: squeeze(c_n, 1) };
  return { output: config.batch_first ? swap01(output) : output, h_n, c_n };
}

/**
 * torch's checks of a forward call (for a port that wants them; the counterpart of the NumPy port's
 * _check_call): the input's rank, dtype and features, hx as a pair (h0, c0) of exactly (L * D, N, Hout)
 * and (L * D, N, H) in the weights' dtype, then a non-empty sequence.
 */
function checkCall(config, input, hx) {
  const directions = config.bidirectional ? 2 : 1;
  const output = config.proj_size > 0 ? config.proj_size : config.hidden_size;
  let data;
  let batch;
  let steps;
  let kind;
  if (isPacked(input)) {
    checkPacked(input);
    data = input.data;
    const sizes = integers(input.batch_sizes);
    [batch, steps, kind] = [sizes[0], sizes.length, 'packed'];
  } else {
    data = input;
    if (data.shape.length !== 2 && data.shape.length !== 3) {
      throw new PortError('ValueError', `LSTM: Expected input to be 2D or 3D, got ${data.shape.length}D instead`);
    }
    const unbatched = data.shape.length === 2;
    const timeAxis = config.batch_first && !unbatched ? 1 : 0;
    batch = unbatched ? null : data.shape[1 - timeAxis];
    [steps, kind] = [data.shape[timeAxis], unbatched ? 'unbatched 2-D' : 'batched 3-D'];
  }
  if (data.dtype !== config.dtype) {
    throw new PortError('ValueError', `RNN input dtype (${data.dtype}) does not match weight dtype (${config.dtype})`);
  }
  const features = data.shape[data.shape.length - 1];
  if (features !== config.input_size) {
    throw new PortError('RuntimeError', `input.shape[-1] must be equal to input_size. Expected ${config.input_size}, got ${features}`);
  }
  if (hx !== null && hx !== undefined) {
    if (!Array.isArray(hx)) throw new PortError('TypeError', 'hx must be a tuple (h0, c0) of two arrays, got an array');
    if (hx.length !== 2) throw new PortError('ValueError', `hx must be a tuple (h0, c0) of exactly two arrays, got ${hx.length} items`);
    const rank = batch === null ? 2 : 3;
    if (hx.some((s) => s === null || s.shape.length !== rank)) {
      throw new PortError('RuntimeError', `For ${kind} input, hx and cx should also be ${rank}-D`);
    }
    const lead = batch === null ? [config.num_layers * directions] : [config.num_layers * directions, batch];
    [[hx[0], output], [hx[1], config.hidden_size]].forEach(([state, width], index) => {
      const expected = [...lead, width];
      if (state.shape.length !== expected.length || state.shape.some((n, k) => n !== expected[k])) {
        throw new PortError('RuntimeError', `Expected hidden[${index}] size (${expected}), got [${state.shape}]`);
      }
      if (state.dtype !== config.dtype) {
        throw new PortError('RuntimeError', `hidden[${index}] dtype (${state.dtype}) does not match weight dtype (${config.dtype})`);
      }
    });
  }
  if (steps === 0) throw new PortError('RuntimeError', 'Expected sequence length to be larger than 0 in RNN');
}

module.exports = {
  swap01, expandDims, squeeze, rows, isPacked, checkPacked, packedToPadded, paddedToPacked, splitHx, timeMajor,
  torchLayout, checkCall,
};

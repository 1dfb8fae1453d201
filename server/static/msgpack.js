// A small msgpack codec for protocol v1: nil, booleans, integers, floats, strings, binary, arrays, maps.
// Encodings are the shortest ones, as Python's msgpack.packb(use_bin_type=True) writes them.

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function encode(value) {
  const out = new Writer();
  write(out, value);
  return out.bytes();
}

class Writer {
  constructor() { this.buffer = new Uint8Array(256); this.view = new DataView(this.buffer.buffer); this.length = 0; }
  reserve(n) {
    if (this.length + n <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buffer.subarray(0, this.length));
    this.buffer = next;
    this.view = new DataView(next.buffer);
  }
  u8(v) { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1; }
  u16(v) { this.reserve(2); this.view.setUint16(this.length, v); this.length += 2; }
  u32(v) { this.reserve(4); this.view.setUint32(this.length, v); this.length += 4; }
  i8(v) { this.reserve(1); this.view.setInt8(this.length, v); this.length += 1; }
  i16(v) { this.reserve(2); this.view.setInt16(this.length, v); this.length += 2; }
  i32(v) { this.reserve(4); this.view.setInt32(this.length, v); this.length += 4; }
  u64(v) { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v)); this.length += 8; }
  i64(v) { this.reserve(8); this.view.setBigInt64(this.length, BigInt(v)); this.length += 8; }
  f64(v) { this.reserve(8); this.view.setFloat64(this.length, v); this.length += 8; }
  raw(bytes) { this.reserve(bytes.length); this.buffer.set(bytes, this.length); this.length += bytes.length; }
  bytes() { return this.buffer.slice(0, this.length); }
}

function write(out, value) {
  if (value === null || value === undefined) return out.u8(0xc0);
  if (value === false) return out.u8(0xc2);
  if (value === true) return out.u8(0xc3);
  if (typeof value === "number") return writeNumber(out, value);
  if (typeof value === "bigint") return value < 0n ? (out.u8(0xd3), out.i64(value)) : (out.u8(0xcf), out.u64(value));
  if (typeof value === "string") return writeString(out, value);
  if (value instanceof ArrayBuffer) return writeBinary(out, new Uint8Array(value));
  if (ArrayBuffer.isView(value)) return writeBinary(out, new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  if (Array.isArray(value)) {
    header(out, value.length, 0x90, 0xdc, 0xdd);
    for (const item of value) write(out, item);
    return;
  }
  if (typeof value === "object") {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined);
    header(out, keys.length, 0x80, 0xde, 0xdf);
    for (const key of keys) { writeString(out, key); write(out, value[key]); }
    return;
  }
  throw new TypeError(`msgpack cannot encode ${typeof value}`);
}

function header(out, n, fix, x16, x32) {
  if (n < 16) out.u8(fix | n);
  else if (n < 0x10000) { out.u8(x16); out.u16(n); }
  else { out.u8(x32); out.u32(n); }
}

function writeNumber(out, v) {
  if (!Number.isSafeInteger(v)) { out.u8(0xcb); out.f64(v); return; }
  if (v >= 0) {
    if (v < 0x80) out.u8(v);
    else if (v < 0x100) { out.u8(0xcc); out.u8(v); }
    else if (v < 0x10000) { out.u8(0xcd); out.u16(v); }
    else if (v < 0x100000000) { out.u8(0xce); out.u32(v); }
    else { out.u8(0xcf); out.u64(v); }
  } else {
    if (v >= -32) out.u8(0xe0 | (v + 32));
    else if (v >= -128) { out.u8(0xd0); out.i8(v); }
    else if (v >= -32768) { out.u8(0xd1); out.i16(v); }
    else if (v >= -2147483648) { out.u8(0xd2); out.i32(v); }
    else { out.u8(0xd3); out.i64(v); }
  }
}

function writeString(out, s) {
  const bytes = textEncoder.encode(s);
  const n = bytes.length;
  if (n < 32) out.u8(0xa0 | n);
  else if (n < 0x100) { out.u8(0xd9); out.u8(n); }
  else if (n < 0x10000) { out.u8(0xda); out.u16(n); }
  else { out.u8(0xdb); out.u32(n); }
  out.raw(bytes);
}

function writeBinary(out, bytes) {
  const n = bytes.length;
  if (n < 0x100) { out.u8(0xc4); out.u8(n); }
  else if (n < 0x10000) { out.u8(0xc5); out.u16(n); }
  else { out.u8(0xc6); out.u32(n); }
  out.raw(bytes);
}

export function decode(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const reader = { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), pos: 0 };
  const value = read(reader);
  if (reader.pos !== bytes.length) throw new Error("msgpack: extra bytes after the value");
  return value;
}

function read(r) {
  if (r.pos >= r.bytes.length) throw new Error("msgpack: truncated");
  const b = r.bytes[r.pos++];
  if (b < 0x80) return b;
  if (b < 0x90) return readMap(r, b & 0x0f);
  if (b < 0xa0) return readArray(r, b & 0x0f);
  if (b < 0xc0) return readString(r, b & 0x1f);
  if (b >= 0xe0) return b - 0x100;
  const v = r.view;
  const take = (n) => { const at = r.pos; r.pos += n; if (r.pos > r.bytes.length) throw new Error("msgpack: truncated"); return at; };
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return readBinary(r, v.getUint8(take(1)));
    case 0xc5: return readBinary(r, v.getUint16(take(2)));
    case 0xc6: return readBinary(r, v.getUint32(take(4)));
    case 0xca: return v.getFloat32(take(4));
    case 0xcb: return v.getFloat64(take(8));
    case 0xcc: return v.getUint8(take(1));
    case 0xcd: return v.getUint16(take(2));
    case 0xce: return v.getUint32(take(4));
    case 0xcf: return Number(v.getBigUint64(take(8)));
    case 0xd0: return v.getInt8(take(1));
    case 0xd1: return v.getInt16(take(2));
    case 0xd2: return v.getInt32(take(4));
    case 0xd3: return Number(v.getBigInt64(take(8)));
    case 0xd9: return readString(r, v.getUint8(take(1)));
    case 0xda: return readString(r, v.getUint16(take(2)));
    case 0xdb: return readString(r, v.getUint32(take(4)));
    case 0xdc: return readArray(r, v.getUint16(take(2)));
    case 0xdd: return readArray(r, v.getUint32(take(4)));
    case 0xde: return readMap(r, v.getUint16(take(2)));
    case 0xdf: return readMap(r, v.getUint32(take(4)));
    default: throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)}`);
  }
}

function readString(r, n) {
  const start = r.pos;
  r.pos += n;
  if (r.pos > r.bytes.length) throw new Error("msgpack: truncated");
  return textDecoder.decode(r.bytes.subarray(start, r.pos));
}

function readBinary(r, n) {
  const start = r.pos;
  r.pos += n;
  if (r.pos > r.bytes.length) throw new Error("msgpack: truncated");
  return r.bytes.slice(start, r.pos);
}

function readArray(r, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = read(r);
  return out;
}

function readMap(r, n) {
  const out = {};
  for (let i = 0; i < n; i++) { const key = read(r); out[key] = read(r); }
  return out;
}

// The host side of an edgeinfer component in a JavaScript engine (Cloudflare workerd, browsers,
// Node): the WASI 0.2 imports the component uses (wasi:io, wasi:cli stdio, wasi:random,
// wasi:http/types), implemented over one in-memory request and response, and `createHandler`,
// which calls the component's wasi:http/incoming-handler exactly as a wasi:http host would.
// Written by `edgeinfer package`; the component itself is `model.js` + `model.core*.wasm`.

class StreamError extends Error {
  constructor(payload) {
    super(payload.tag);
    this.payload = payload;
  }
}

class WasiError {
  constructor(message) {
    this.message = message;
  }
  toDebugString() {
    return this.message;
  }
}

class Pollable {
  block() {}
  ready() {
    return true;
  }
}

class InputStream {
  constructor(bytes) {
    this.bytes = bytes;
    this.offset = 0;
  }
  read(len) {
    if (this.offset >= this.bytes.length) throw new StreamError({ tag: "closed" });
    const end = Math.min(this.bytes.length, this.offset + Number(len));
    const chunk = this.bytes.slice(this.offset, end);
    this.offset = end;
    return chunk;
  }
  blockingRead(len) {
    return this.read(len);
  }
  skip(len) {
    return BigInt(this.read(len).length);
  }
  blockingSkip(len) {
    return this.skip(len);
  }
  subscribe() {
    return new Pollable();
  }
}

class OutputStream {
  constructor(sink) {
    this.sink = sink;
  }
  checkWrite() {
    return 1n << 20n;
  }
  write(bytes) {
    this.sink(bytes);
  }
  blockingWriteAndFlush(bytes) {
    this.sink(bytes);
  }
  flush() {}
  blockingFlush() {}
  subscribe() {
    return new Pollable();
  }
}

function lineSink(log) {
  let pending = "";
  const decoder = new TextDecoder();
  return (bytes) => {
    pending += decoder.decode(bytes, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) log(line);
  };
}

class Fields {
  constructor(entries = []) {
    this.list = entries;
  }
  static fromList(entries) {
    return new Fields(entries.map(([name, value]) => [name.toLowerCase(), value]));
  }
  entries() {
    return this.list.map(([name, value]) => [name, value]);
  }
  get(name) {
    const key = name.toLowerCase();
    return this.list.filter(([n]) => n === key).map(([, value]) => value);
  }
  has(name) {
    return this.get(name).length > 0;
  }
  set(name, values) {
    this.delete(name);
    for (const value of values) this.append(name, value);
  }
  append(name, value) {
    this.list.push([name.toLowerCase(), value]);
  }
  delete(name) {
    const key = name.toLowerCase();
    this.list = this.list.filter(([n]) => n !== key);
  }
  clone() {
    return new Fields(this.entries());
  }
}

const METHODS = ["get", "head", "post", "put", "delete", "connect", "options", "trace", "patch"];

class IncomingRequest {
  constructor({ method, pathWithQuery, scheme, authority, headers, body }) {
    this.request = { method, pathWithQuery, scheme, authority, headers, body };
    this.consumed = false;
  }
  method() {
    const lower = this.request.method.toLowerCase();
    return METHODS.includes(lower) ? { tag: lower } : { tag: "other", val: this.request.method };
  }
  pathWithQuery() {
    return this.request.pathWithQuery;
  }
  scheme() {
    const scheme = (this.request.scheme ?? "http").toLowerCase();
    if (scheme === "http") return { tag: "HTTP" };
    if (scheme === "https") return { tag: "HTTPS" };
    return { tag: "other", val: scheme };
  }
  authority() {
    return this.request.authority;
  }
  headers() {
    const encoder = new TextEncoder();
    return new Fields(this.request.headers.map(([name, value]) => [name.toLowerCase(), encoder.encode(value)]));
  }
  consume() {
    if (this.consumed) throw undefined;
    this.consumed = true;
    return new IncomingBody(this.request.body);
  }
}

class FutureTrailers {
  subscribe() {
    return new Pollable();
  }
  get() {
    return { tag: "ok", val: { tag: "ok", val: undefined } };
  }
}

class IncomingBody {
  constructor(bytes) {
    this.input = new InputStream(bytes);
    this.taken = false;
  }
  stream() {
    if (this.taken) throw undefined;
    this.taken = true;
    return this.input;
  }
  static finish() {
    return new FutureTrailers();
  }
}

class OutgoingBody {
  constructor() {
    this.chunks = [];
    this.taken = false;
    this.finished = false;
  }
  write() {
    if (this.taken) throw undefined;
    this.taken = true;
    return new OutputStream((bytes) => this.chunks.push(bytes.slice()));
  }
  static finish(body) {
    body.finished = true;
  }
  bytes() {
    const length = this.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    const all = new Uint8Array(length);
    let offset = 0;
    for (const chunk of this.chunks) {
      all.set(chunk, offset);
      offset += chunk.length;
    }
    return all;
  }
}

class OutgoingResponse {
  constructor(headers) {
    this.fields = headers;
    this.status = 200;
    this.outgoing = new OutgoingBody();
    this.bodyTaken = false;
  }
  statusCode() {
    return this.status;
  }
  setStatusCode(code) {
    if (code < 100 || code > 999) throw undefined;
    this.status = code;
  }
  headers() {
    return this.fields;
  }
  body() {
    if (this.bodyTaken) throw undefined;
    this.bodyTaken = true;
    return this.outgoing;
  }
}

class ResponseOutparam {
  static set(param, response) {
    param.response = response;
  }
}

/** The imports object `instantiate` (from `model.js`) takes. */
export function wasiImports({ log = console.log, error = console.error } = {}) {
  const stdout = new OutputStream(lineSink(log));
  const stderr = new OutputStream(lineSink(error));
  const stdin = new InputStream(new Uint8Array());
  return {
    "wasi:cli/stdin": { getStdin: () => stdin },
    "wasi:cli/stdout": { getStdout: () => stdout },
    "wasi:cli/stderr": { getStderr: () => stderr },
    "wasi:io/error": { Error: WasiError },
    "wasi:io/poll": { Pollable, poll: (list) => new Uint32Array(list.map((_, i) => i)) },
    "wasi:io/streams": { InputStream, OutputStream },
    "wasi:random/random": {
      getRandomBytes(len) {
        const bytes = new Uint8Array(Number(len));
        crypto.getRandomValues(bytes);
        return bytes;
      },
      getRandomU64() {
        const words = new BigUint64Array(1);
        crypto.getRandomValues(words);
        return words[0];
      },
    },
    "wasi:http/types": {
      Fields,
      FutureTrailers,
      IncomingBody,
      IncomingRequest,
      OutgoingBody,
      OutgoingResponse,
      ResponseOutparam,
    },
  };
}

/**
 * Instantiates the component (`instantiate` from `model.js`, `getCoreModule` giving each
 * `model.core*.wasm` as a `WebAssembly.Module`) and returns `handle(request)`: request
 * `{method, pathWithQuery, headers: [[name, value]], body: Uint8Array}`, answer
 * `{status, headers: [[name, value]], body: Uint8Array}`. One instance serves requests one
 * after another; a trap discards it and the next request gets a fresh one.
 */
export function createHandler(instantiate, getCoreModule, options) {
  let instance = null;
  const decoder = new TextDecoder();
  return async function handle(request) {
    if (instance === null) instance = instantiate(getCoreModule, wasiImports(options));
    const component = await instance;
    const param = new ResponseOutparam();
    try {
      component.incomingHandler.handle(new IncomingRequest(request), param);
    } catch (trap) {
      instance = null;
      throw trap;
    }
    const result = param.response;
    if (result === undefined) throw new Error("the component set no response");
    if (result.tag !== "ok") throw new Error(`the component answered with error ${JSON.stringify(result.val)}`);
    const response = result.val;
    return {
      status: response.status,
      headers: response.fields.entries().map(([name, value]) => [name, decoder.decode(value)]),
      body: response.outgoing.bytes(),
    };
  };
}

// One edgeinfer model in the browser (or any JavaScript engine with WebAssembly and fetch):
// `infer(request)` takes an Open Inference Protocol v2 request (a JSON string or object) and
// resolves to the v2 response object; a request the server would refuse rejects with an
// `InferenceError` carrying the server's status and message. The component's own wasi:http
// handler answers, so shapes and errors are those of `edgeinfer serve`.
// Written by `edgeinfer package --target browser`; see docs/src/browser.md.
import { instantiate } from "./model.js";
import { createHandler } from "./edgeinfer-host.js";
import { MODEL } from "./edgeinfer-model.js";

export { MODEL };

/** A request the model refused: `status` is the HTTP status `edgeinfer serve` answers with. */
export class InferenceError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "InferenceError";
    this.status = status;
  }
}

async function coreModule(name) {
  const response = await fetch(new URL(`./${name}`, import.meta.url));
  if (!response.ok) throw new Error(`cannot load ${name}: HTTP ${response.status}`);
  return WebAssembly.compile(await response.arrayBuffer());
}

/**
 * The component's wasi:http handler: `{method, pathWithQuery, headers, body}` in,
 * `{status, headers, body}` out (bodies as Uint8Array), as a wasi:http host would call it.
 */
export const handle = createHandler(instantiate, coreModule);

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const modelPath = `/v2/models/${encodeURIComponent(MODEL.name)}/versions/${MODEL.version}`;

async function call(method, path, body) {
  const answer = await handle({
    method,
    pathWithQuery: path,
    headers: body === undefined ? [] : [["content-type", "application/json"]],
    body: body === undefined ? new Uint8Array() : encoder.encode(body),
  });
  const parsed = JSON.parse(decoder.decode(answer.body));
  if (answer.status !== 200) throw new InferenceError(answer.status, parsed.error ?? `HTTP ${answer.status}`);
  return parsed;
}

/** Runs one v2 inference request (string or object); resolves to the v2 response object. */
export function infer(request) {
  return call("POST", `${modelPath}/infer`, typeof request === "string" ? request : JSON.stringify(request));
}

/** The model's v2 metadata object (name, versions, platform, inputs, outputs). */
export function metadata() {
  return call("GET", modelPath);
}

// One model under onnxruntime-web's wasm backend (SIMD, 1 thread) in Node: the wasm peer that
// benches/inference.rs compares the sandbox with. Prints the median and p90 of `runs` timed
// session.run calls, in ms, as JSON.
//
// node infer.mjs <model.onnx> <input-name> <input.f32le> <dim,dim,...> <runs>
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-web";

const [model, inputName, inputFile, dims, runs] = process.argv.slice(2);
ort.env.wasm.numThreads = 1;
ort.env.wasm.simd = true;
const session = await ort.InferenceSession.create(readFileSync(model), { executionProviders: ["wasm"] });
const bytes = readFileSync(inputFile);
const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
const shape = dims.split(",").map(Number);
const feeds = { [inputName]: new ort.Tensor("float32", data, shape) };
const warmup = Math.max(3, Math.floor(Number(runs) / 10));
for (let i = 0; i < warmup; i++) await session.run(feeds);
const times = [];
for (let i = 0; i < Number(runs); i++) {
  const started = performance.now();
  await session.run(feeds);
  times.push(performance.now() - started);
}
times.sort((a, b) => a - b);
const at = (p) => times[Math.round((times.length - 1) * p)];
console.log(JSON.stringify({ median_ms: at(0.5), p90_ms: at(0.9), version: ort.env.versions.web }));

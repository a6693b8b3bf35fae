// A Cloudflare Worker serving one edgeinfer model over the single-model subset of the Open
// Inference Protocol v2. The component's own wasi:http handler answers every request, so
// statuses, JSON shapes and error messages are those of `edgeinfer serve`.
// Written by `edgeinfer package --target cloudflare`; see docs/src/cloudflare.md.
import { instantiate } from "./model.js";
import { createHandler } from "./edgeinfer-host.js";
import { coreModules } from "./core-modules.js";

const handle = createHandler(instantiate, (name) => coreModules[name]);

export default {
  async fetch(request) {
    const url = new URL(request.url);
    try {
      const answer = await handle({
        method: request.method,
        pathWithQuery: url.pathname + url.search,
        scheme: url.protocol.replace(":", ""),
        authority: url.host,
        headers: [...request.headers],
        body: new Uint8Array(await request.arrayBuffer()),
      });
      return new Response(answer.body, { status: answer.status, headers: answer.headers });
    } catch (trap) {
      return Response.json({ error: `the model trapped: ${trap}` }, { status: 500 });
    }
  },
};

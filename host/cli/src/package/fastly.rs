//! `--target fastly`: refused, saying why. Fastly Compute and its local runtime Viceroy
//! (0.12 to 0.22) host components of Fastly's own world, `fastly:compute/service@0.1.0`
//! (which exports `fastly:compute/http-incoming` and imports Fastly's `http-req`,
//! `http-resp` and `http-body` interfaces), or core modules on Fastly's hostcall ABI. Neither
//! links `wasi:http`: Viceroy stops at the component's first `wasi:http/types` import, and
//! even with `--unknown-import-behavior trap` finds no `fastly:compute/http-incoming` export.
//! Hosting the model there needs an adapter component implementing `wasi:http/types` over
//! Fastly's interfaces (see docs/src/fastly.md).

use std::path::PathBuf;

use edgeinfer_runtime::VerifiedComponent;

use super::Files;

/// Why no Fastly package is written: the platform's world, not the model, is the obstacle.
pub const UNSUPPORTED: &str = "Fastly Compute cannot host this component: it serves the standard \
    `wasi:http/proxy` world (it exports `wasi:http/incoming-handler@0.2.0` and imports \
    `wasi:http/types`), while Fastly Compute and Viceroy (0.12 to 0.22) link only Fastly's own world \
    `fastly:compute/service@0.1.0` (export `fastly:compute/http-incoming@0.1.0`) or core modules on \
    Fastly's hostcall ABI; Viceroy refuses it with \"component imports instance `wasi:http/types@0.2.12`, \
    but a matching implementation was not found in the linker\". Deploy it with --target cloudflare, \
    --target spin or --target browser instead; docs/src/fastly.md says what an adapter would take";

pub fn write(_component: &VerifiedComponent, _files: Files) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::bail!(UNSUPPORTED)
}

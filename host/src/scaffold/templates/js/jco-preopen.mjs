// Lets `jco guest-types` read ./wit: the WASI filesystem shim bundled with
// jco 1.35 starts with no preopened directory, so its WIT reader finds no
// file at all. This gives it the host's root, as older shims did.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const transpile = require.resolve('@bytecodealliance/jco-transpile');
const shim = createRequire(transpile).resolve('@bytecodealliance/preview2-shim/filesystem');
const filesystem = await import(pathToFileURL(shim).href);
filesystem._addPreopen('/', '/');

'use strict';
/**
 * Entry of silo's built-in Node.js runtime: `node [memory flags] index.js`, cwd = the code. It only wires.
 *
 * Plain JavaScript, node's own modules only: nothing of silo exists inside an environment, and the
 * function's node_modules are its own. The files here are CommonJS (package.json beside them says so).
 */

const { RuntimeClient } = require('./client.js');
const { main } = require('./loop.js');

main(process.env, new RuntimeClient(process.env.AWS_LAMBDA_RUNTIME_API || ''));

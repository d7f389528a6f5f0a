'use strict';
/**
 * Loading the function's handler as Lambda's nodejs runtimes do.
 *
 * `_HANDLER` is `path/module.export` (the export may be nested: `module.a.b`), relative to the code
 * directory. The module is, in order: the file as named (no extension, CommonJS); `module.js` as
 * CommonJS unless the nearest package.json says "type": "module"; `module.js` as an ES module when it
 * does; `module.mjs` (ES module); `module.cjs`; else node's own resolution of `module` from the code
 * directory (node_modules included).
 */

const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');
const { HandlerNotFound, ImportModuleError, MalformedHandlerName, UserCodeSyntaxError } = require('./errors.js');

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;

function requireIfExists(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function importIfExists(file) {
  return fs.existsSync(file) ? import(pathToFileURL(file).href) : undefined;
}

/** True when the nearest package.json above `folder` (not past a node_modules) says "type": "module". */
function isModuleScope(folder) {
  for (let dir = folder; ; dir = path.dirname(dir)) {
    if (dir.endsWith('/node_modules')) {
      return false;
    }
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      try {
        return JSON.parse(fs.readFileSync(manifest, 'utf8'))?.type === 'module';
      } catch (err) {
        console.warn(`${manifest} cannot be read, it will be ignored for ES module detection purposes.`, err);
        return false;
      }
    }
    if (dir === path.dirname(dir)) {
      return false;
    }
  }
}

async function loadModule(appRoot, moduleRoot, name) {
  const base = path.resolve(appRoot, moduleRoot, name);
  const extensionless = requireIfExists(base);
  if (extensionless) {
    return extensionless;
  }
  const moduleScope = isModuleScope(path.dirname(base));
  if (!moduleScope) {
    const loaded = requireIfExists(base + '.js');
    if (loaded) {
      return loaded;
    }
  }
  const loaded =
    (moduleScope && (await importIfExists(base + '.js'))) ||
    (await importIfExists(base + '.mjs')) ||
    requireIfExists(base + '.cjs');
  if (loaded) {
    return loaded;
  }
  // require() alone would resolve from this file's directory, not the code's.
  return require(require.resolve(name, { paths: [appRoot, path.resolve(appRoot, moduleRoot)] }));
}

/**
 * Lambda's runtimes give handler modules a global `awslambda` to wrap a handler that streams its response.
 * silo serves no streamed invocations, so a module that asks for one fails its init saying so, rather
 * than with "awslambda is not defined".
 */
function defineAwsLambdaGlobal(env) {
  if (env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === '1' || env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === 'true') {
    return;
  }
  globalThis.awslambda = {
    streamifyResponse() {
      throw new Error(
        'silo does not stream responses (it serves no InvokeWithResponseStream): ' +
          'return the whole response from the handler instead of writing it to a response stream',
      );
    },
  };
}

/** The handler function named by `handlerName`, or a `Runtime.*` error saying why not. */
async function loadHandler(appRoot, handlerName, env = process.env) {
  defineAwsLambdaGlobal(env);
  if (handlerName.includes('..')) {
    throw new MalformedHandlerName(
      `'${handlerName}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const moduleAndHandler = path.basename(handlerName);
  const moduleRoot = handlerName.substring(0, handlerName.indexOf(moduleAndHandler));
  const match = moduleAndHandler.match(FUNCTION_EXPR);
  if (!match) {
    throw new MalformedHandlerName('Bad handler');
  }
  const [, name, exportPath] = match;
  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, name);
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new UserCodeSyntaxError(err);
    }
    if (err && err.code === 'MODULE_NOT_FOUND') {
      throw new ImportModuleError(err);
    }
    throw err;
  }
  const handler = exportPath.split('.').reduce((nested, key) => nested && nested[key], app);
  if (!handler) {
    throw new HandlerNotFound(`${handlerName} is undefined or not exported`);
  }
  if (typeof handler !== 'function') {
    throw new HandlerNotFound(`${handlerName} is not a function`);
  }
  return handler;
}

function isAsync(handler) {
  return handler?.constructor?.name === 'AsyncFunction';
}

module.exports = { loadHandler, isAsync };

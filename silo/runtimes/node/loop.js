'use strict';
/**
 * The runtime's life: INIT (load the handler, or report why not and exit), then the invoke loop.
 *
 * An invocation's failure is reported and the loop goes on. An uncaught exception or an unhandled
 * promise rejection is reported (as the init's error during init, else as the invocation's) and ends
 * the process, as on Lambda: the platform replaces the environment. The Runtime API client is passed
 * in, so the loop runs against any client with the same four methods. An answer is posted with the next
 * GET /next behind it, except a crash's: the process ends right after it.
 */

const errors = require('./errors.js');
const logs = require('./logs.js');
const { loadHandler, isAsync } = require('./handler.js');
const { HEADER, beforeExit, buildCallbacks, attachInvocationData, fatal } = require('./context.js');

function isPromise(value) {
  return Boolean(value && typeof value.then === 'function');
}

class Runtime {
  constructor(client, handler, errorCallbacks, logError, env) {
    this.client = client;
    this.handler = handler;
    this.async = isAsync(handler);
    this.errorCallbacks = errorCallbacks;
    this.logError = logError;
    this.env = env;
  }

  /** Wait for the next invocation at the next turn of the event loop. */
  scheduleIteration() {
    setImmediate(() => this.handleOnce().catch(fatal));
  }

  async handleOnce() {
    const { headers, body } = await this.client.nextInvocation();
    const requestId = headers[HEADER.requestId];
    if (!requestId) {
      throw new Error('invocation id is missing or invalid');
    }
    logs.setInvocation(requestId, headers[HEADER.tenantId]);
    const [callback, context, markCompleted] = buildCallbacks(
      this.client,
      requestId,
      () => this.scheduleIteration(),
      this.logError,
    );
    try {
      this.setErrorCallbacks(requestId);
      this.setDefaultExitListener(requestId, markCompleted);
      const event = JSON.parse(body);
      const result = this.handler(event, attachInvocationData(context, headers, this.env), callback);
      if (isPromise(result)) {
        result.then(context.succeed, context.fail).catch(context.fail);
      }
    } catch (err) {
      callback(err);
    }
  }

  /** From now on a crash is this invocation's error; the process then ends, and with it the environment. */
  setErrorCallbacks(requestId) {
    const report = (status) => (error) => {
      const exit = () => process.exit(status);
      this.client.postInvocationError(requestId, errors.toRapidResponse(error)).then(exit, exit);
    };
    this.errorCallbacks.uncaughtException = report(129);
    this.errorCallbacks.unhandledRejection = report(128);
  }

  /** When the event loop empties before the handler said it is done: a handler that is neither async nor
   * called back answers null; an async one whose promise can never settle fails. */
  setDefaultExitListener(requestId, markCompleted) {
    beforeExit.set(() => {
      markCompleted();
      const next = () => this.scheduleIteration();
      if (this.async) {
        const error = new errors.NodeJsExit(
          "The handler's promise did not settle and the event loop has nothing left to run, so it never will. " +
            'Await every promise the handler starts before returning.',
        );
        this.logError('Invoke Error', error);
        this.client.postInvocationError(requestId, errors.toRapidResponse(error), true).then(next, fatal);
      } else {
        this.client.postInvocationResponse(requestId, 'null', true).then(next, fatal);
      }
    });
  }
}

/** Entry of the runtime process: patch the console, load the handler, then serve invocations. */
async function main(env, client) {
  const logError = logs.patchConsole(env);
  const exitAfter = (status) => () => process.exit(status);
  // Until the first invocation, a crash is the init's error.
  const errorCallbacks = {
    uncaughtException: (error) => client.postInitError(errors.toRapidResponse(error)).then(exitAfter(129), exitAfter(129)),
    unhandledRejection: (error) =>
      client.postInitError(errors.toRapidResponse(error)).then(exitAfter(128), exitAfter(128)),
  };
  process.on('uncaughtException', (error) => {
    logError('Uncaught Exception', error);
    errorCallbacks.uncaughtException(error);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const error = new errors.UnhandledPromiseRejection(reason, promise);
    logError('Unhandled Promise Rejection', error);
    errorCallbacks.unhandledRejection(error);
  });
  beforeExit.reset();
  process.on('beforeExit', beforeExit.invoke);
  let handler;
  try {
    handler = await loadHandler(env.LAMBDA_TASK_ROOT || process.cwd(), env._HANDLER || '', env);
  } catch (err) {
    logError('Uncaught Exception', err);
    errorCallbacks.uncaughtException(err);
    return;
  }
  new Runtime(client, handler, errorCallbacks, logError, env).scheduleIteration();
}

module.exports = { main, Runtime };

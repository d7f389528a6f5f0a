'use strict';
/**
 * The `context` a handler receives and the ways it may end its invocation (callback, context.done,
 * succeed, fail, or a returned promise), as Lambda's nodejs20.x and nodejs22.x runtimes build them.
 *
 * Only the first way used counts. A callback with `callbackWaitsForEmptyEventLoop` (the default)
 * answers once the event loop has nothing left to do; every other way answers at once.
 */

const { toRapidResponse } = require('./errors.js');

const HEADER = Object.freeze({
  requestId: 'lambda-runtime-aws-request-id',
  deadlineMs: 'lambda-runtime-deadline-ms',
  invokedFunctionArn: 'lambda-runtime-invoked-function-arn',
  traceId: 'lambda-runtime-trace-id',
  clientContext: 'lambda-runtime-client-context',
  cognitoIdentity: 'lambda-runtime-cognito-identity',
  tenantId: 'lambda-runtime-aws-tenant-id',
});

/** What runs when the event loop empties: the one listener of the invocation in progress. */
const beforeExit = {
  listener: () => {},
  set(fn) {
    this.listener = fn;
  },
  reset() {
    this.listener = () => {};
  },
  invoke() {
    beforeExit.listener();
  },
};

/** The body as the response document: JSON, with `undefined` as null. Throws when it cannot be serialised. */
function serialise(result) {
  let body;
  try {
    body = JSON.stringify(result === undefined ? null : result);
  } catch (err) {
    throw new Error(`Unable to stringify response body: ${err.message}`);
  }
  return body === undefined ? 'null' : body;
}

/**
 * [callback, callbackContext, markCompleted] of one invocation. `logError(title, err)` logs a failure;
 * `scheduleNext` starts the wait for the next invocation once the answer is posted.
 */
function buildCallbacks(client, requestId, scheduleNext, logError) {
  const postError = (err) => {
    logError('Invoke Error', err);
    client.postInvocationError(requestId, toRapidResponse(err), true).then(scheduleNext, fatal);
  };
  let invoked = false;
  const complete = (result) => {
    if (invoked) {
      console.error(
        'Invocation has already been reported as done. Cannot call complete more than once per invocation.',
      );
      return;
    }
    invoked = true;
    let body;
    try {
      body = serialise(result);
    } catch (err) {
      postError(err);
      return;
    }
    client.postInvocationResponse(requestId, body, true).then(scheduleNext, fatal);
  };
  let waitForEmptyEventLoop = true;
  const callback = (err, result) => {
    beforeExit.reset();
    if (err !== undefined && err !== null) {
      postError(err);
    } else if (!waitForEmptyEventLoop) {
      complete(result);
    } else {
      beforeExit.set(() => setImmediate(() => complete(result)));
    }
  };
  const done = (err, result) => {
    beforeExit.reset();
    if (err !== undefined && err !== null) {
      postError(err);
    } else {
      complete(result);
    }
  };
  let finished = false;
  const once =
    (fn) =>
    (...args) => {
      if (!finished) {
        finished = true;
        fn(...args);
      }
    };
  const callbackContext = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
    succeed: once((result) => done(null, result)),
    // Whatever it was given is reported as it is: an Error by its name, anything else by its type.
    fail: once((err) => done(err === undefined || err === null ? 'handled' : err, null)),
    done: once(done),
  };
  return [once(callback), callbackContext, () => (invoked = true)];
}

function parseJson(value, name) {
  if (value === undefined) {
    return undefined;
  }
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

/** Add the invocation's and the environment's data to `callbackContext`; the result is the handler's context. */
function attachInvocationData(callbackContext, headers, env) {
  const deadline = Number(headers[HEADER.deadlineMs]);
  if (headers[HEADER.traceId]) {
    env._X_AMZN_TRACE_ID = headers[HEADER.traceId];
  } else {
    delete env._X_AMZN_TRACE_ID;
  }
  return Object.assign(callbackContext, {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJson(headers[HEADER.clientContext], 'ClientContext'),
    identity: parseJson(headers[HEADER.cognitoIdentity], 'CognitoIdentity'),
    invokedFunctionArn: headers[HEADER.invokedFunctionArn],
    awsRequestId: headers[HEADER.requestId],
    tenantId: headers[HEADER.tenantId],
    getRemainingTimeInMillis() {
      return deadline - Date.now();
    },
  });
}

function fatal(err) {
  process.stderr.write(`silo: the Runtime API could not be reached: ${err && err.message}\n`);
  process.exit(1);
}

module.exports = { HEADER, beforeExit, buildCallbacks, attachInvocationData, serialise, fatal };

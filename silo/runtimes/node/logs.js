'use strict';
/**
 * console.* as Lambda's nodejs runtimes patch it: one record a line on stdout, which the platform reads
 * as the environment's log stream.
 *
 * Text: `<ISO time>\t<request id>\t<LEVEL>\t<message>`, newlines of the message turned into \r so that a
 * record stays one line (during init the request id is `undefined`, as on Lambda). JSON
 * (AWS_LAMBDA_LOG_FORMAT=JSON): {timestamp, level, requestId, tenantId (when the invocation has one),
 * message, and errorType, errorMessage, stackTrace when an Error is logged}, filtered by
 * AWS_LAMBDA_LOG_LEVEL.
 */

const util = require('util');

const LEVELS = Object.freeze({
  TRACE: { name: 'TRACE', priority: 1 },
  DEBUG: { name: 'DEBUG', priority: 2 },
  INFO: { name: 'INFO', priority: 3 },
  WARN: { name: 'WARN', priority: 4 },
  ERROR: { name: 'ERROR', priority: 5 },
  FATAL: { name: 'FATAL', priority: 6 },
});

// Where Lambda's runtime keeps the request id for libraries that log on their own (a global symbol).
const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');

const invoke = { tenantId: undefined };

function setInvocation(requestId, tenantId) {
  globalThis[REQUEST_ID] = requestId;
  invoke.tenantId = tenantId;
}

function errorFields(value) {
  return {
    errorType: value?.constructor?.name ?? 'UnknownError',
    errorMessage: value.message,
    stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
  };
}

function jsonErrorReplacer(_key, value) {
  return value instanceof Error ? Object.assign(errorFields(value), value) : value;
}

function formatJson(timestamp, level, message, params) {
  const record = { timestamp, level: level.name, requestId: globalThis[REQUEST_ID] };
  if (invoke.tenantId) {
    record.tenantId = invoke.tenantId;
  }
  if (params.length === 0) {
    record.message = message;
    try {
      return JSON.stringify(record, jsonErrorReplacer);
    } catch (_) {
      record.message = util.format(message);
      return JSON.stringify(record);
    }
  }
  record.message = util.format(message, ...params);
  const error = params.find((param) => param instanceof Error);
  if (error !== undefined) {
    const fields = errorFields(error);
    record.errorType = fields.errorType;
    record.errorMessage = fields.errorMessage;
    record.stackTrace = Array.isArray(fields.stackTrace) ? fields.stackTrace : [];
  }
  return JSON.stringify(record);
}

function textLine(level, message, params) {
  const time = new Date().toISOString();
  return `${time}\t${globalThis[REQUEST_ID]}\t${level.name}\t${util.format(message, ...params)}`;
}

function jsonLine(level, message, params) {
  return formatJson(new Date().toISOString(), level, message, params);
}

/** Replace console's methods; returns `logError(title, err)`, how the runtime logs a failure. */
function patchConsole(env) {
  const json = (env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
  const format = json ? jsonLine : textLine;
  const write = (level, message, params) => {
    process.stdout.write(format(level, message, params).replace(/\n/g, '\r') + '\n');
  };
  // The platform sets AWS_LAMBDA_LOG_LEVEL only with JSON logs; set by the function itself, it filters text too.
  const threshold = LEVELS[(env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || LEVELS.TRACE;
  const method = (level) =>
    level.priority >= threshold.priority ? (message, ...params) => write(level, message, params) : () => {};
  console.trace = method(LEVELS.TRACE);
  console.debug = method(LEVELS.DEBUG);
  console.info = method(LEVELS.INFO);
  console.log = console.info;
  console.warn = method(LEVELS.WARN);
  console.error = method(LEVELS.ERROR);
  console.fatal = (message, ...params) => write(LEVELS.FATAL, message, params);
  const { intoError, toFormatted } = require('./errors.js');
  return json
    ? (_title, err) => console.error(intoError(err))
    : (title, err) => console.error(title, toFormatted(intoError(err)));
}

module.exports = { patchConsole, setInvocation, formatJson, LEVELS };

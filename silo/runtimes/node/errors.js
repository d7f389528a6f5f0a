'use strict';
/**
 * Errors as Lambda's nodejs runtimes report them: the `Runtime.*` types the runtime diagnoses itself,
 * the document posted to the Runtime API ({errorType, errorMessage, trace}), and the text form written
 * to the log.
 */

const util = require('util');

function isErrorLike(obj) {
  return Boolean(
    obj &&
      typeof obj.name === 'string' &&
      obj.name &&
      typeof obj.message === 'string' &&
      obj.message &&
      typeof obj.stack === 'string' &&
      obj.stack,
  );
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

/** The document the caller receives: an Error's name, message and stack lines; anything else by its type. */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: error.name,
        errorMessage: error.message,
        trace: String(error.stack).split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

/** An Error's own members are not enumerable; this shows them beside the user's enumerable ones. */
function withEnumerableProperties(value) {
  if (!(value instanceof Error)) {
    return value;
  }
  const shown = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
  if (typeof value.stack === 'string') {
    shown.stack = value.stack.split('\n');
  }
  return shown;
}

/** The text form of an error in a log line; it always starts with a tab, as Lambda's does. */
function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_key, value) => withEnumerableProperties(value));
  } catch (_) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

class ImportModuleError extends Error {}
class HandlerNotFound extends Error {}
class MalformedHandlerName extends Error {}
class UserCodeSyntaxError extends Error {}
class NodeJsExit extends Error {}
class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}

for (const cls of [
  ImportModuleError,
  HandlerNotFound,
  MalformedHandlerName,
  UserCodeSyntaxError,
  NodeJsExit,
  UnhandledPromiseRejection,
]) {
  cls.prototype.name = `Runtime.${cls.name}`;
}

module.exports = {
  intoError,
  toRapidResponse,
  toFormatted,
  ImportModuleError,
  HandlerNotFound,
  MalformedHandlerName,
  UserCodeSyntaxError,
  NodeJsExit,
  UnhandledPromiseRejection,
};

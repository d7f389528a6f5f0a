'use strict';
/**
 * The runtime's client of the Runtime API: node's own http module over one kept-alive connection.
 *
 * Node unreferences a kept-alive socket while it is idle, so the connection never keeps the event
 * loop alive by itself: a callback-style handler's invocation ends when the loop empties, as on Lambda.
 * The long poll of GET /next has no timeout.
 */

const http = require('http');

// Mirror of silo/runtime_api/paths.py, which this runtime cannot import; a unit test keeps them equal.
const NEXT = '/2018-06-01/runtime/invocation/next';
const INVOCATION_PREFIX = '/2018-06-01/runtime/invocation/';
const INIT_ERROR = '/2018-06-01/runtime/init/error';
const FUNCTION_ERROR_TYPE = 'Lambda-Runtime-Function-Error-Type';

class RuntimeClientError extends Error {}

class RuntimeClient {
  /** `address`: host:port, as AWS_LAMBDA_RUNTIME_API gives it. */
  constructor(address) {
    const colon = address.lastIndexOf(':');
    this.host = address.slice(0, colon).replace(/^\[|\]$/g, '') || '127.0.0.1';
    this.port = Number(address.slice(colon + 1));
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  /** The next invocation: {headers (lower-case names), body (a string)}. Retried once on a connection the
   * platform closed while it was kept alive: only GET /next is safe to send twice. */
  async nextInvocation() {
    let answer;
    try {
      answer = await this._call('GET', NEXT);
    } catch (err) {
      if (!(err instanceof RuntimeClientError) && err.code === 'ECONNRESET') {
        answer = await this._call('GET', NEXT);
      } else {
        throw err;
      }
    }
    if (answer.status !== 200) {
      throw new RuntimeClientError(`GET next answered ${answer.status}: ${answer.body.slice(0, 200)}`);
    }
    return answer;
  }

  postInvocationResponse(requestId, body) {
    return this._post(`${INVOCATION_PREFIX}${requestId}/response`, body, {});
  }

  /** `doc`: Lambda's error document {errorType, errorMessage, trace}. */
  postInvocationError(requestId, doc) {
    return this._post(`${INVOCATION_PREFIX}${requestId}/error`, JSON.stringify(doc), this._errorHeaders(doc));
  }

  postInitError(doc) {
    return this._post(INIT_ERROR, JSON.stringify(doc), this._errorHeaders(doc));
  }

  _errorHeaders(doc) {
    // Header values must be visible ASCII; the platform falls back to the body's errorType otherwise.
    const type = String(doc.errorType || '');
    return /^[\x20-\x7e]+$/.test(type) ? { [FUNCTION_ERROR_TYPE]: type } : {};
  }

  async _post(path, body, headers) {
    const answer = await this._call('POST', path, body, headers);
    if (answer.status !== 202) {
      // 413 (too large) is already the caller's answer; anything else is the platform's concern.
      process.stderr.write(`[WARNING] the Runtime API answered ${answer.status} for ${path}\n`);
    }
    return answer.status;
  }

  _call(method, path, body, headers) {
    const payload = body === undefined ? undefined : Buffer.from(body, 'utf8');
    const options = {
      host: this.host,
      port: this.port,
      method,
      path,
      agent: this.agent,
      headers: Object.assign(
        { 'Content-Type': 'application/json', 'Content-Length': payload ? payload.length : 0 },
        headers || {},
      ),
    };
    return new Promise((resolve, reject) => {
      const request = http.request(options, (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode,
            headers: response.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        response.on('error', reject);
      });
      request.on('error', reject);
      request.end(payload);
    });
  }
}

module.exports = { RuntimeClient, RuntimeClientError, NEXT, INVOCATION_PREFIX, INIT_ERROR, FUNCTION_ERROR_TYPE };

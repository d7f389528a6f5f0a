'use strict';
/**
 * The runtime's client of the Runtime API: HTTP/1.1 over one kept-alive TCP connection, no timeout.
 *
 * A few lines over node's `net` instead of its `http` client, for two reasons. The request that answers
 * an invocation carries the next GET /next right behind it, in the same write (HTTP/1.1 pipelining, as
 * silo's Python runtime does): the platform freezes an environment as soon as it has its answer, so a
 * GET sent afterwards would wait for the next call's thaw and cost it a round trip. And the connection
 * is unreferenced while no request is outstanding, so it never keeps the event loop alive by itself:
 * a callback-style handler's invocation ends when the loop empties, as on Lambda. The only server this
 * talks to is silo's Runtime API (Content-Length bodies, keep-alive).
 */

const net = require('net');

// Mirror of silo/runtime_api/paths.py, which this runtime cannot import; a unit test keeps them equal.
const NEXT = '/2018-06-01/runtime/invocation/next';
const INVOCATION_PREFIX = '/2018-06-01/runtime/invocation/';
const INIT_ERROR = '/2018-06-01/runtime/init/error';
const FUNCTION_ERROR_TYPE = 'Lambda-Runtime-Function-Error-Type';

const MAX_HEAD = 1 << 20;
const HEAD_END = Buffer.from('\r\n\r\n');

class RuntimeClientError extends Error {}

/** The server closed a kept-alive connection before this request got any answer; a GET may go again. */
class StaleConnection extends RuntimeClientError {}

class RuntimeClient {
  /** `address`: host:port, as AWS_LAMBDA_RUNTIME_API gives it. */
  constructor(address) {
    const colon = address.lastIndexOf(':');
    this.host = address.slice(0, colon).replace(/^\[|\]$/g, '') || '127.0.0.1';
    this.port = Number(address.slice(colon + 1));
    this.hostHeader = address;
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    // Requests sent on the current connection and not answered yet, in order: {resolve, reject}.
    this.waiting = [];
    // The answer of a GET /next sent behind the last posted result, for nextInvocation to take.
    this.pendingNext = null;
  }

  /** The next invocation: {status, headers (lower-case names), body (a string)}. The long poll never times out. */
  async nextInvocation() {
    const pending = this.pendingNext;
    this.pendingNext = null;
    let answer;
    try {
      answer = await (pending || this._send([this._request('GET', NEXT)])[0]);
    } catch (err) {
      if (!(err instanceof StaleConnection)) {
        throw err;
      }
      // Only GET /next is safe to send twice: the server dropped it unanswered.
      answer = await this._send([this._request('GET', NEXT)])[0];
    }
    if (answer.status !== 200) {
      throw new RuntimeClientError(`GET next answered ${answer.status}: ${answer.body.slice(0, 200)}`);
    }
    return answer;
  }

  /** Post the invocation's result; `thenNext`: send GET /next right behind it (see nextInvocation). */
  postInvocationResponse(requestId, body, thenNext = false) {
    const path = `${INVOCATION_PREFIX}${requestId}/response`;
    return this._post(this._request('POST', path, body), thenNext);
  }

  /** `doc`: Lambda's error document {errorType, errorMessage, trace}. */
  postInvocationError(requestId, doc, thenNext = false) {
    const path = `${INVOCATION_PREFIX}${requestId}/error`;
    return this._post(this._request('POST', path, JSON.stringify(doc), errorHeaders(doc)), thenNext);
  }

  postInitError(doc) {
    return this._post(this._request('POST', INIT_ERROR, JSON.stringify(doc), errorHeaders(doc)), false);
  }

  async _post(head, thenNext) {
    const answers = this._send(thenNext ? [head, this._request('GET', NEXT)] : [head]);
    if (thenNext) {
      this.pendingNext = answers[1];
      // Taken by nextInvocation; a failure there is handled there, not here.
      answers[1].catch(() => {});
    }
    const answer = await answers[0];
    if (answer.status !== 202) {
      // 413 (too large) is already the caller's answer; anything else is the platform's concern.
      process.stderr.write(`[WARNING] the Runtime API answered ${answer.status} for ${head.path}\n`);
    }
    return answer.status;
  }

  /** Write `requests` in one go; one promise of an answer for each, in order. */
  _send(requests) {
    const socket = this.socket || this._connect();
    const answers = requests.map(
      () =>
        new Promise((resolve, reject) => {
          this.waiting.push({ resolve, reject });
        }),
    );
    socket.ref();
    socket.write(Buffer.concat(requests.flatMap((r) => r.bytes)));
    return answers;
  }

  /** One request: its bytes (head, then body) and its path. */
  _request(method, path, body, extra) {
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body, 'utf8');
    let head = `${method} ${path} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n`;
    if (method === 'POST') {
      head += 'Content-Type: application/json\r\n';
    }
    for (const [name, value] of Object.entries(extra || {})) {
      head += `${name}: ${value}\r\n`;
    }
    head += `Content-Length: ${payload.length}\r\n\r\n`;
    return { path, bytes: [Buffer.from(head, 'latin1'), payload] };
  }

  _connect() {
    const socket = net.connect({ host: this.host, port: this.port });
    // Requests and answers are small and latency-bound; Nagle would hold them back.
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this._received(socket, chunk));
    socket.on('error', (err) => this._lost(socket, err));
    socket.on('close', () => this._lost(socket, null));
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    return socket;
  }

  _lost(socket, err) {
    if (socket !== this.socket) {
      return;
    }
    this.socket = null;
    socket.destroy();
    const waiting = this.waiting;
    this.waiting = [];
    const gotAny = this.buffer.length > 0;
    this.buffer = Buffer.alloc(0);
    waiting.forEach((w, i) => {
      // What got no byte of an answer was not answered at all; whether it may go again is the caller's call.
      const stale = !(i === 0 && gotAny);
      w.reject(
        stale
          ? new StaleConnection(`the Runtime API closed the connection${err ? `: ${err.message}` : ''}`)
          : new RuntimeClientError('the Runtime API closed the connection mid-answer'),
      );
    });
  }

  _received(socket, chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      const end = this.buffer.indexOf(HEAD_END);
      if (end < 0) {
        if (this.buffer.length > MAX_HEAD) {
          this._lost(socket, new RuntimeClientError('answer head too large'));
        }
        return;
      }
      const lines = this.buffer.subarray(0, end).toString('utf8').split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const length = Number(headers['content-length'] || 0);
      if (this.buffer.length < end + 4 + length) {
        return; // the rest of the body is still on its way
      }
      const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
      this.buffer = this.buffer.subarray(end + 4 + length);
      if (status >= 100 && status < 200) {
        continue; // an interim answer; the real one follows
      }
      const waiter = this.waiting.shift();
      if (this.waiting.length === 0) {
        // Nothing outstanding: the connection alone must not keep the event loop alive.
        socket.unref();
      }
      if (waiter !== undefined) {
        waiter.resolve({ status, headers, body });
      }
      if ((headers.connection || '').toLowerCase() === 'close') {
        // What was sent behind this request was not read: it goes again on a new connection.
        this._lost(socket, null);
        return;
      }
    }
  }
}

function errorHeaders(doc) {
  // A header value must be visible ASCII; the platform reads the body's errorType otherwise.
  const type = String(doc.errorType || '');
  return /^[\x20-\x7e]+$/.test(type) ? { [FUNCTION_ERROR_TYPE]: type } : {};
}

module.exports = { RuntimeClient, RuntimeClientError, NEXT, INVOCATION_PREFIX, INIT_ERROR, FUNCTION_ERROR_TYPE };

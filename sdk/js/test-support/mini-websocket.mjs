// A minimal RFC 6455 WebSocket client for tests, with the browser API subset the SDK uses
// (constructor(url), readyState, send(text), close(code), addEventListener for open/message/error/close).
// It stands for "a WebSocket implementation passed in by the caller" (Node 20 without --experimental-websocket).
import crypto from 'node:crypto';
import http from 'node:http';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export class MiniWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url) {
    this.url = url;
    this.readyState = MiniWebSocket.CONNECTING;
    this._listeners = new Map();
    this._buffer = Buffer.alloc(0);
    this._fragments = [];
    this._closeCode = 1006;
    this._closeReason = '';
    this._closeSent = false;
    const target = new URL(url);
    if (target.protocol !== 'ws:') throw new SyntaxError(`MiniWebSocket supports ws:// only, got ${url}`);
    const key = crypto.randomBytes(16).toString('base64');
    const request = http.request({
      host: target.hostname,
      port: target.port || 80,
      path: target.pathname + target.search,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13' },
    });
    request.on('upgrade', (response, socket, head) => {
      const expected = crypto.createHash('sha1').update(key + GUID).digest('base64');
      if (response.headers['sec-websocket-accept'] !== expected) {
        socket.destroy();
        this._emit('error', { message: 'bad Sec-WebSocket-Accept' });
        this._finish();
        return;
      }
      this._socket = socket;
      socket.setNoDelay(true);
      socket.on('data', (chunk) => this._onData(chunk));
      socket.on('close', () => this._finish());
      socket.on('error', (error) => this._emit('error', { message: error.message, error }));
      this.readyState = MiniWebSocket.OPEN;
      this._emit('open', {});
      if (head && head.length) this._onData(head);
    });
    request.on('response', (response) => {
      response.resume();
      this._emit('error', { message: `unexpected HTTP ${response.statusCode}` });
      this._finish();
    });
    request.on('error', (error) => {
      this._emit('error', { message: error.message, error });
      this._finish();
    });
    request.end();
  }

  addEventListener(type, handler) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    this._listeners.get(type).push(handler);
  }

  removeEventListener(type, handler) {
    const list = this._listeners.get(type) ?? [];
    const index = list.indexOf(handler);
    if (index >= 0) list.splice(index, 1);
  }

  _emit(type, event) {
    for (const handler of [...(this._listeners.get(type) ?? [])]) handler({ type, ...event });
  }

  send(data) {
    if (this.readyState !== MiniWebSocket.OPEN) throw new Error('WebSocket is not open');
    this._sendFrame(0x1, Buffer.from(String(data), 'utf8'));
  }

  close(code = 1000, reason = '') {
    if (this.readyState === MiniWebSocket.CLOSED) return;
    if (this.readyState === MiniWebSocket.CONNECTING) {
      this._finish();
      return;
    }
    if (!this._closeSent) {
      const reasonBytes = Buffer.from(reason, 'utf8');
      const payload = Buffer.alloc(2 + reasonBytes.length);
      payload.writeUInt16BE(code, 0);
      reasonBytes.copy(payload, 2);
      this._sendFrame(0x8, payload);
      this._closeSent = true;
    }
    this.readyState = MiniWebSocket.CLOSING;
    // do not wait forever for the server's answer and TCP close
    this._closeTimer = setTimeout(() => this._socket?.destroy(), 2000);
  }

  _sendFrame(opcode, payload) {
    const mask = crypto.randomBytes(4);
    let header;
    if (payload.length < 126) {
      header = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
    } else if (payload.length < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode;
      header[1] = 0x80 | 126;
      header.writeUInt16BE(payload.length, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode;
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    const masked = Buffer.alloc(payload.length);
    for (let i = 0; i < payload.length; i += 1) masked[i] = payload[i] ^ mask[i % 4];
    this._socket.write(Buffer.concat([header, mask, masked]));
  }

  _onData(chunk) {
    this._buffer = Buffer.concat([this._buffer, chunk]);
    for (;;) {
      if (this._buffer.length < 2) return;
      const first = this._buffer[0];
      const second = this._buffer[1];
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this._buffer.length < 4) return;
        length = this._buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this._buffer.length < 10) return;
        length = Number(this._buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (second & 0x80) offset += 4; // servers never mask, but skip a mask if present
      if (this._buffer.length < offset + length) return;
      const payload = this._buffer.subarray(offset, offset + length);
      this._buffer = this._buffer.subarray(offset + length);
      if (this._onFrame(first & 0x80, first & 0x0f, Buffer.from(payload)) === false) return;
    }
  }

  _onFrame(fin, opcode, payload) {
    if (opcode === 0x8) {
      this._closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this._closeReason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
      if (!this._closeSent) {
        this._sendFrame(0x8, payload.subarray(0, 2));
        this._closeSent = true;
      }
      this.readyState = MiniWebSocket.CLOSING;
      // the handshake is complete: close TCP ourselves rather than wait for the server to
      this._socket.end();
      this._socket.destroy();
      return false;
    }
    if (opcode === 0x9) {
      this._sendFrame(0xa, payload);
      return true;
    }
    if (opcode === 0xa) return true;
    if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      this._fragments.push(payload);
      if (!fin) return true;
      const data = Buffer.concat(this._fragments);
      this._fragments = [];
      this._emit('message', { data: data.toString('utf8') });
      return true;
    }
    return true;
  }

  _finish() {
    if (this.readyState === MiniWebSocket.CLOSED) return;
    this.readyState = MiniWebSocket.CLOSED;
    if (this._closeTimer) clearTimeout(this._closeTimer);
    this._emit('close', { code: this._closeCode, reason: this._closeReason, wasClean: this._closeCode !== 1006 });
  }
}

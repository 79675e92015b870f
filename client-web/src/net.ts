// Transports to the session server. WebRTC data channels first (`log`: reliable, ordered, the
// frame stream; `presence`: unordered, no retransmits, one frame per message), signaled with one
// HTTP round trip; the WebSocket fallback when WebRTC is missing, blocked or does not open in
// time. Both carry the same frames; the rest of the editor does not care which one it got.

export type TransportKind = 'webrtc' | 'websocket';

export interface Transport {
  readonly kind: TransportKind;
  /** Reliable, ordered bytes (frames). */
  send(bytes: Uint8Array): void;
  /** One presence frame: unreliable where the transport has such a lane. */
  sendPresence(frame: Uint8Array): void;
  close(): void;
  onData: (bytes: Uint8Array) => void;
  onPresence: (frame: Uint8Array) => void;
  onClose: (why: string) => void;
  bytesOut: number;
  bytesIn: number;
}

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

const RTC_TIMEOUT_MS = 8000;
/** `log` sends pause above this many buffered bytes (the server bounds its side too). */
const MAX_BUFFERED = 4 * 1024 * 1024;
/** How long a WebRTC connection may stay `disconnected` before it counts as lost. */
const DISCONNECTED_GRACE_MS = 3000;

function timeout<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms / 1000} s`)), ms)),
  ]);
}

abstract class Base {
  bytesOut = 0;
  bytesIn = 0;
  onData: (bytes: Uint8Array) => void = () => {};
  onPresence: (frame: Uint8Array) => void = () => {};
  onClose: (why: string) => void = () => {};
}

class RtcTransport extends Base implements Transport {
  readonly kind = 'webrtc' as const;
  private backlog: Uint8Array[] = [];

  constructor(
    private pc: RTCPeerConnection,
    private log: RTCDataChannel,
    private presence: RTCDataChannel,
  ) {
    super();
    log.onmessage = (e) => {
      const b = new Uint8Array(e.data as ArrayBuffer);
      this.bytesIn += b.length;
      this.onData(b);
    };
    presence.onmessage = (e) => {
      const b = new Uint8Array(e.data as ArrayBuffer);
      this.bytesIn += b.length;
      this.onPresence(b);
    };
    log.onclose = () => this.onClose('the WebRTC channel closed');
    log.bufferedAmountLowThreshold = MAX_BUFFERED / 4;
    log.onbufferedamountlow = () => this.drain();
    let lost: number | undefined;
    pc.onconnectionstatechange = () => {
      window.clearTimeout(lost);
      if (pc.connectionState === 'failed') this.onClose('the WebRTC connection failed');
      // ICE may come back from 'disconnected' (a brief loss); after a grace it counts as lost
      // rather than waiting the half minute until the browser says 'failed'.
      if (pc.connectionState === 'disconnected') {
        lost = window.setTimeout(() => this.onClose('the WebRTC connection was lost'), DISCONNECTED_GRACE_MS);
      }
    };
  }

  send(bytes: Uint8Array): void {
    this.bytesOut += bytes.length;
    this.backlog.push(bytes);
    this.drain();
  }

  private drain(): void {
    while (this.backlog.length > 0 && this.log.readyState === 'open' && this.log.bufferedAmount < MAX_BUFFERED) {
      const next = this.backlog.shift() as Uint8Array;
      // 16 KiB messages: every WebRTC stack takes them; frames may span messages.
      for (let i = 0; i < next.length; i += 16 * 1024) this.log.send(next.slice(i, i + 16 * 1024) as Uint8Array<ArrayBuffer>);
    }
  }

  sendPresence(frame: Uint8Array): void {
    // Latest wins: drop rather than queue behind a congested channel.
    if (this.presence.readyState === 'open' && this.presence.bufferedAmount < 64 * 1024) {
      this.bytesOut += frame.length;
      this.presence.send(frame as Uint8Array<ArrayBuffer>);
    }
  }

  close(): void {
    this.pc.close();
  }
}

class WsTransport extends Base implements Transport {
  readonly kind = 'websocket' as const;

  constructor(private ws: WebSocket) {
    super();
    ws.onmessage = (e) => {
      const b = new Uint8Array(e.data as ArrayBuffer);
      this.bytesIn += b.length;
      this.onData(b);
    };
    ws.onclose = (e) => this.onClose(e.reason ? `closed: ${e.reason}` : `the WebSocket closed (${e.code})`);
  }

  send(bytes: Uint8Array): void {
    this.bytesOut += bytes.length;
    this.ws.send(bytes as Uint8Array<ArrayBuffer>);
  }

  sendPresence(frame: Uint8Array): void {
    // No unreliable lane: presence rides the stream, but never piles up behind a slow socket.
    if (this.ws.bufferedAmount < 64 * 1024) this.send(frame);
  }

  close(): void {
    this.ws.close();
  }
}

async function connectRtc(session: string, iceServers: IceServer[]): Promise<Transport> {
  if (typeof RTCPeerConnection === 'undefined') throw new Error('this browser has no WebRTC');
  const pc = new RTCPeerConnection({ iceServers });
  try {
    const log = pc.createDataChannel('log');
    const presence = pc.createDataChannel('presence', { ordered: false, maxRetransmits: 0 });
    log.binaryType = 'arraybuffer';
    presence.binaryType = 'arraybuffer';
    await pc.setLocalDescription(await pc.createOffer());
    await timeout(RTC_TIMEOUT_MS, 'ICE gathering did not finish', new Promise<void>((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve();
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
    }));
    const res = await fetch(`/api/v1/sessions/${session}/rtc`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'offer', sdp: pc.localDescription?.sdp }),
    });
    if (!res.ok) throw new Error(`WebRTC signaling refused (${res.status}): ${await res.text()}`);
    await pc.setRemoteDescription(await res.json());
    await timeout(RTC_TIMEOUT_MS, 'the WebRTC channel did not open', new Promise<void>((resolve, reject) => {
      log.onopen = () => resolve();
      log.onerror = () => reject(new Error('the WebRTC channel failed'));
    }));
    return new RtcTransport(pc, log, presence);
  } catch (e) {
    pc.close();
    throw e;
  }
}

async function connectWs(session: string): Promise<Transport> {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/sessions/${session}/ws`);
  ws.binaryType = 'arraybuffer';
  await timeout(RTC_TIMEOUT_MS, 'the WebSocket did not open', new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error('the WebSocket failed to connect'));
  }));
  return new WsTransport(ws);
}

/**
 * WebRTC, else the WebSocket. `notes` receives a sentence for each fallback taken (shown to the
 * user: a silent downgrade is a support ticket later).
 */
export async function connect(
  session: string,
  ticket: string,
  notes: (text: string) => void,
  prefer: TransportKind | null = null,
): Promise<Transport> {
  if (prefer !== 'websocket') {
    try {
      const info = await (await fetch(`/api/v1/server?ticket=${encodeURIComponent(ticket)}`)).json();
      return await connectRtc(session, info.webrtc?.ice_servers ?? []);
    } catch (e) {
      notes(`WebRTC unavailable (${(e as Error).message}); using the WebSocket fallback.`);
    }
  }
  return connectWs(session);
}

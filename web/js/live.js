// Live events for a page: an SDK event stream that lives as long as the page, handed over in batches, one
// batch per animation frame (a burst of a thousand events costs one DOM update, not a thousand).
//
// The SDK reconnects by itself when the connection drops and resumes an execution's stream with `since`. A
// stream also ends for good on a 1008 close: an open socket is closed when its token expires, so after each
// token refresh the stream is reopened with the new token, from where it stood.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * subscribe(session, { executionSerial, jobSerial, includeOutput, since }, onBatch(events), onState(state, error))
 * state: 'connecting' | 'live' | 'reconnecting' | 'closed'. Returns { close() }.
 * Each event gets `receivedAt` (performance.now() when it came off the socket).
 */
export function subscribe(session, filters, onBatch, onState = () => {}) {
  let stream = null;
  let stopped = false;
  let since = filters.since ?? null; // with executionSerial: 0 replays the execution's events from its start
  let pending = [];
  let frame = null;

  const flush = () => {
    frame = null;
    const batch = pending;
    pending = [];
    if (batch.length && !stopped) onBatch(batch);
  };

  const onToken = () => stream?.close(); // the loop below reopens with the new token
  session.addEventListener('token', onToken);

  (async () => {
    let delay = 250;
    let first = true;
    while (!stopped && session.signedIn) {
      try {
        onState(first ? 'connecting' : 'reconnecting');
        stream = session.client.executions.events({ ...filters, since, connectTimeout: 15000 });
        await stream.ready;
        onState('live', null, !first);
        first = false;
        delay = 250;
        for await (const event of stream) {
          if (stopped) break;
          event.receivedAt = performance.now();
          pending.push(event);
          if (frame === null) frame = requestAnimationFrame(flush);
        }
      } catch (error) {
        if (!stopped) onState('reconnecting', error);
      }
      const serial = filters.executionSerial;
      if (serial && stream && Number.isInteger(stream.positions?.[serial])) since = stream.positions[serial];
      if (stopped || !session.signedIn) break;
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
    onState('closed');
  })();

  return {
    close() {
      stopped = true;
      session.removeEventListener('token', onToken);
      if (frame !== null) cancelAnimationFrame(frame);
      stream?.close();
    },
  };
}

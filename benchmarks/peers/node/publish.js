// Peer "node-amqplib": amqplib ConfirmChannel, one publish() call per message.
//
// Each publish gets a confirm callback; a counter of outstanding callbacks keeps at most
// --window messages unconfirmed, and a false return from publish() waits for 'drain'.
// Prints one JSON result line; exits 1 unless every message was acked.
'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const amqp = require('amqplib');

function options() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'amqp://guest:guest@127.0.0.1:5672/' },
      queue: { type: 'string' },
      count: { type: 'string' },
      window: { type: 'string', default: '1024' },
      'body-file': { type: 'string' },
      declare: { type: 'boolean', default: false },
    },
  });
  const count = Number.parseInt(values.count, 10);
  const window = Number.parseInt(values.window, 10);
  if (!values.queue || !values['body-file'] || !(count >= 1) || !(window >= 1)) {
    console.error(
      'usage: publish.js --queue NAME --count N --window W --body-file PATH [--url URL] [--declare]',
    );
    process.exit(2);
  }
  return { ...values, count, window, bodyFile: values['body-file'] };
}

function feedbackId(line) {
  try {
    const fid = JSON.parse(line)?.feedback_id;
    return typeof fid === 'string' && fid ? fid : null;
  } catch {
    return null;
  }
}

// count [body, messageId] pairs cycling over the non-empty lines of path. Message i is line
// i % lines; its id is that line's string "feedback_id", else String(i).
function loadMessages(path, count) {
  const lines = fs
    .readFileSync(path, 'utf8')
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.trim());
  if (!lines.length) throw new Error(`${path}: no message bodies`);
  const bodies = lines.map((l) => Buffer.from(l));
  const fids = lines.map(feedbackId);
  return Array.from({ length: count }, (_, i) => {
    const j = i % lines.length;
    return [bodies[j], fids[j] ?? String(i)];
  });
}

async function main() {
  const opts = options();
  const messages = loadMessages(opts.bodyFile, opts.count);
  const conn = await amqp.connect(opts.url);
  const ch = await conn.createConfirmChannel();
  let confirmed = 0;
  let nacked = 0;
  let inFlight = 0;
  // A broker error closes the channel: fail whatever waits on it (the rejection is reported once).
  conn.on('error', () => {});
  const channelClosed = new Promise((_, reject) => {
    ch.on('error', reject);
    ch.on('close', () => reject(new Error(`channel closed with ${inFlight} unconfirmed`)));
  });
  channelClosed.catch(() => {});
  if (opts.declare) await ch.assertQueue(opts.queue, { durable: true });
  else await ch.checkQueue(opts.queue);

  let wake = null; // set while the publisher waits for a free slot or for the last confirm
  const settled = (err) => {
    inFlight--;
    if (err) nacked++;
    else confirmed++;
    if (wake) wake();
  };
  const until = (cond) =>
    cond()
      ? Promise.resolve()
      : new Promise((resolve) => {
          wake = () => {
            if (cond()) {
              wake = null;
              resolve();
            }
          };
        });

  const orClosed = (p) => Promise.race([p, channelClosed]);

  const start = process.hrtime.bigint();
  for (const [body, messageId] of messages) {
    if (inFlight >= opts.window) await orClosed(until(() => inFlight < opts.window));
    inFlight++;
    const props = { persistent: true, contentType: 'application/json', messageId };
    if (!ch.publish('', opts.queue, body, props, settled)) {
      await orClosed(new Promise((resolve) => ch.once('drain', resolve)));
    }
  }
  await orClosed(until(() => inFlight === 0));
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;

  await conn.close();
  console.log(
    JSON.stringify({
      peer: 'node-amqplib',
      count: opts.count,
      window: opts.window,
      elapsed_s: elapsed,
      msg_per_s: confirmed / elapsed,
      confirmed,
      nacked,
    }),
  );
  process.exitCode = confirmed === opts.count ? 0 : 1;
}

main().catch((err) => {
  console.error(`node-amqplib: ${err.message}`);
  process.exit(2);
});

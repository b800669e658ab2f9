// The benchmark's server for Node: the same minimal HTTP/1.1 responder as
// benchmarks/responder.py (byte for byte), on Node's `cluster` with a `net`
// server (not the http module), so the comparison measures the cluster.
//
//   node responder.js PORT WORKERS      (NODE_CLUSTER_SCHED_POLICY=rr|none)
//
// GET /work runs a fixed loop, GET /slow spends BENCH_SLOW_MS (20) ms of CPU.
// The primary prints "ready" once every worker is listening.  Each worker
// counts connections and requests and writes them to $BENCH_COUNTS_DIR.
'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const port = Number(process.argv[2]);
const workers = Number(process.argv[3] || 1);
const host = '127.0.0.1';
const backlog = 511;
const workIterations = Number(process.env.BENCH_WORK_ITERATIONS || 16000);
const slowMicroseconds = Number(process.env.BENCH_SLOW_MS || 20) * 1000;
const maxHead = 64 * 1024;
const body = 'Hello, World!\n';

function makeResponse(workerId, close) {
  return Buffer.from([
    'HTTP/1.1 200 OK',
    'Content-Type: text/plain',
    'Content-Length: ' + body.length,
    'X-Worker: ' + workerId,
    'Connection: ' + (close ? 'close' : 'keep-alive'),
  ].join('\r\n') + '\r\n\r\n' + body, 'latin1');
}

function work(iterations) {
  let x = 0;
  for (let i = 0; i < iterations; i++) {
    x = (x * 31 + i) & 0xffff;
  }
  return x;
}

// Spend this process's CPU time (user + system), as responder.py's spin().
function spin(microseconds) {
  const start = process.cpuUsage();
  for (;;) {
    const used = process.cpuUsage(start);
    if (used.user + used.system >= microseconds) return;
  }
}

function runPrimary() {
  let listening = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
  cluster.on('listening', () => {
    listening += 1;
    if (listening === workers) {
      console.log('ready on ' + port);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    console.log('worker ' + worker.id + ' exited ' + (signal || code));
  });
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) {
      worker.kill();
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function runWorker() {
  const workerId = String(cluster.worker ? cluster.worker.id : 0);
  const keepAliveResponse = makeResponse(workerId, false);
  const closeResponse = makeResponse(workerId, true);
  const counters = { connections: 0, requests: 0 };
  let sink = 0;

  const server = net.createServer((socket) => {
    counters.connections += 1;
    let buffer = '';
    let closing = false;
    socket.on('data', (chunk) => {
      if (closing) return;
      buffer += chunk.toString('latin1');
      let end;
      while ((end = buffer.indexOf('\r\n\r\n')) >= 0) {
        const head = buffer.slice(0, end);
        buffer = buffer.slice(end + 4);
        counters.requests += 1;
        if (head.startsWith('GET /work')) {
          sink ^= work(workIterations);
        } else if (head.startsWith('GET /slow')) {
          spin(slowMicroseconds);
        }
        if (head.toLowerCase().includes('connection: close')) {
          closing = true;
          socket.end(closeResponse);
          return;
        }
        socket.write(keepAliveResponse);
      }
      if (buffer.length > maxHead) {
        closing = true;
        socket.end();
      }
    });
    socket.on('error', () => {});
  });
  server.listen({ port, host, backlog });

  const directory = process.env.BENCH_COUNTS_DIR;
  if (directory) {
    const target = path.join(directory, 'worker-' + process.pid + '.json');
    const report = () => {
      const record = { worker: workerId, pid: process.pid, sink, ...counters };
      fs.writeFileSync(target + '.tmp', JSON.stringify(record));
      fs.renameSync(target + '.tmp', target);
    };
    report();
    setInterval(report, 200).unref();
  }
}

if (cluster.isPrimary) {
  runPrimary();
} else {
  runWorker();
}

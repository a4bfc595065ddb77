// An independent probe of the gRPC layer: a closed loop of grpc-js calls, IN_FLIGHT at a
// time on one channel, for SECONDS each, first the grpc.health.v1 Check (the empty call),
// then Contribute. Prints one JSON object: calls/s of each and Contribute / Check.
// A client in another language and runtime than the bench's own load generator (grpc.aio),
// so the ratio does not depend on how Python's client spends its time.
//
//   node probe.js HOST:PORT PROTO_ROOT GOOGLE_PROTO_ROOT TOKEN [SECONDS] [IN_FLIGHT] [WARMUP]
// TOKEN: a bearer token of a client with the game role (Contribute writes).
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, protoRoot, googleRoot, token] = process.argv.slice(2, 6);
const seconds = Number(process.argv[6] || 10);
const inFlight = Number(process.argv[7] || 64);
const warmup = Number(process.argv[8] || 1);
const options = { keepCase: true, longs: String, enums: String, defaults: true };

const jackpot = grpc.loadPackageDefinition(
  protoLoader.loadSync("jackpot/v1/jackpot.proto", { includeDirs: [protoRoot, googleRoot], ...options })
).jackpot.v1;
const health = grpc.loadPackageDefinition(
  protoLoader.loadSync(path.join(__dirname, "health.proto"), options)
).grpc.health.v1;

// Both stubs share one channel, as the bench's own client does (one TCP connection).
const channel = new grpc.Channel(target, grpc.credentials.createInsecure(), {});
const service = new jackpot.JackpotService(target, grpc.credentials.createInsecure(), { channelOverride: channel });
const checker = new health.Health(target, grpc.credentials.createInsecure(), { channelOverride: channel });
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${token}`);

// One closed loop: each of `inFlight` workers sends the next call when its last one ends.
// Calls that end inside the measured window (after the warm-up) are counted.
function loop(send) {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const from = start + BigInt(Math.round(warmup * 1e9));
    const until = from + BigInt(Math.round(seconds * 1e9));
    let ok = 0;
    const errors = {};
    let running = inFlight;
    const worker = () => {
      const now = process.hrtime.bigint();
      if (now >= until) {
        if (--running === 0) resolve({ ok, errors });
        return;
      }
      send((error) => {
        const ended = process.hrtime.bigint();
        if (ended >= from && ended < until) {
          if (error) errors[grpc.status[error.code]] = (errors[grpc.status[error.code]] || 0) + 1;
          else ok += 1;
        }
        worker();
      });
    };
    for (let i = 0; i < inFlight; i++) worker();
  });
}

async function main() {
  await new Promise((resolve, reject) =>
    checker.waitForReady(Date.now() + 10000, (e) => (e ? reject(e) : resolve()))
  );
  const check = await loop((done) => checker.Check({}, (e) => done(e)));
  const request = { game_id: "grpcjs-probe", wager_amount: "1000" };
  const contribute = await loop((done) => service.Contribute(request, metadata, (e) => done(e)));
  const checkRate = check.ok / seconds;
  const contributeRate = contribute.ok / seconds;
  console.log(
    JSON.stringify({
      in_flight: inFlight,
      seconds,
      check_calls_per_s: Math.round(checkRate),
      contribute_calls_per_s: Math.round(contributeRate),
      contribute_over_check: checkRate ? Number((contributeRate / checkRate).toFixed(3)) : null,
      errors: { check: check.errors, contribute: contribute.errors },
    })
  );
  channel.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

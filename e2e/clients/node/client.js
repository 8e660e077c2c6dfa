#!/usr/bin/env node
// kafka-identity-node-client: a tiny kafkajs program for the e2e suite (e2e/tests/test_clients.py).
// It speaks plain Kafka over TLS (the TLS stands in for its sidecar) with kafkajs's defaults
// otherwise: no SASL, no credentials. The tests run it and judge its output.
//
//   produce --topic T --value V             one record, acks=all (-1); kafkajs's producer is not
//                                           idempotent by default, as the Java console producer
//                                           in the same tests
//   consume --topic T --group G --value V   group consumer from the start; exit 0 once V was read
//                                           and its offset committed
//   read    --topic T --group G             group consumer from the start, counting records until
//                                           the timeout. kafkajs has no group-less consumer (no
//                                           assign), so the test gives the principal this group
//                                           and only the topic's Read ACL is in question
//
// Every mode takes --bootstrap, --ca, --cert, --key and --timeout (seconds). Errors are printed
// as "error: <Kafka error name>: <text>"; exit 1 on any failure, 2 on wrong arguments.
// --direct-principal P instead of --ca/--cert/--key: the path without the filter, for comparison:
// plaintext to a SASL_PLAINTEXT listener (the local stack's DIRECT), authenticating with
// SASL/OAUTHBEARER and an unsecured token whose sub is P, as the filter would.
// kafkajs comes from .tools/clients/node/node_modules (scripts/install-e2e-clients).
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

function usage () {
  process.stderr.write('usage: client.js produce|consume|read --bootstrap HOST:PORT --ca CA.pem --cert CERT.pem ' +
    '--key KEY.pem --topic T [--group G] [--value V] [--timeout SECONDS]\n')
  process.exit(2)
}

function parse (argv) {
  const mode = argv[0]
  const o = { timeout: 30 }
  for (let i = 1; i < argv.length; i += 2) {
    const name = argv[i]
    const value = argv[i + 1]
    if (!name || !name.startsWith('--') || value === undefined) usage()
    o[name.slice(2)] = value
  }
  const identity = o['direct-principal'] ? [] : ['ca', 'cert', 'key']
  for (const required of ['bootstrap', 'topic', ...identity]) {
    if (!o[required]) usage()
  }
  o.timeout = Number(o.timeout)
  if (!Number.isFinite(o.timeout) || o.timeout <= 0) usage()
  return [mode, o]
}

// The Kafka error inside a kafkajs error (KafkaJSNonRetriableError wraps the protocol error in
// `cause`): "TOPIC_AUTHORIZATION_FAILED: Not authorized to access topics: [...]".
function describe (err) {
  const seen = []
  for (let e = err; e && seen.length < 8; e = e.cause || e.originalError) {
    seen.push(e.type ? `${e.type}: ${e.message}` : `${e.name || 'Error'}: ${e.message}`)
  }
  return seen.join(' <- ')
}

function fail (err) {
  process.stdout.write(`error: ${describe(err)}\n`)
  process.exit(1)
}

// kafkajs logs to stdout by default; its lines go to stderr so that stdout holds only results.
const toStderr = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log
  process.stderr.write(`[kafkajs ${label} ${namespace}] ${message} ${JSON.stringify(extra)}\n`)
}

// An unsecured (alg none) JWT, what Kafka's default OAUTHBEARER validator takes and the filter sends.
function unsecuredToken (principal) {
  const b64 = obj => Buffer.from(JSON.stringify(obj)).toString('base64url')
  const now = Math.floor(Date.now() / 1000)
  return `${b64({ alg: 'none' })}.${b64({ sub: principal, iat: now, exp: now + 3600 })}.`
}

function kafka (o) {
  const identity = o['direct-principal']
    ? {
        sasl: {
          mechanism: 'oauthbearer',
          oauthBearerProvider: async () => ({ value: unsecuredToken(o['direct-principal']) })
        }
      }
    : { ssl: { ca: [fs.readFileSync(o.ca)], cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.key) } }
  return new Kafka({
    clientId: 'kafka-identity-e2e-node',
    brokers: [o.bootstrap],
    ...identity,
    logLevel: logLevel.WARN,
    logCreator: toStderr
  })
}

async function produce (o) {
  if (!o.value) usage()
  const producer = kafka(o).producer()
  await producer.connect()
  try {
    await producer.send({ topic: o.topic, acks: -1, messages: [{ value: o.value }] })
    process.stdout.write('produced\n')
  } finally {
    await producer.disconnect()
  }
}

// A group consumer as kafkajs users write one: subscribe, run, eachMessage, kafkajs's own retry
// and restart defaults. A crash kafkajs does not restart from (a non-retriable error such as an
// authorization failure) ends the program; after a retriable one kafkajs restarts the consumer
// itself, and the error is printed.
async function groupConsume (o, onMessage) {
  if (!o.group) usage()
  const consumer = kafka(o).consumer({
    groupId: o.group,
    sessionTimeout: 10000,
    heartbeatInterval: 3000
  })
  let finish
  const done = new Promise(resolve => { finish = resolve })
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    process.stdout.write(`error: ${describe(payload.error)}${payload.restart ? ' (kafkajs restarts the consumer)' : ''}\n`)
    if (!payload.restart) finish({ error: payload.error })
  })
  const timer = setTimeout(() => finish({ timeout: true }), o.timeout * 1000)
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [o.topic], fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic, partition, message }) => {
        if (await onMessage(consumer, topic, partition, message)) finish({ ok: true })
      }
    })
    return await done
  } finally {
    clearTimeout(timer)
    await consumer.disconnect()
  }
}

async function consume (o) {
  if (!o.value) usage()
  const r = await groupConsume(o, async (consumer, topic, partition, message) => {
    if (message.value === null || message.value.toString() !== o.value) return false
    await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }])
    return true
  })
  if (r.error) throw r.error
  if (!r.ok) throw new Error(`did not read ${JSON.stringify(o.value)} within ${o.timeout} s`)
  process.stdout.write(`read ${o.value}\n`)
}

async function read (o) {
  let count = 0
  const r = await groupConsume(o, async (_consumer, _topic, _partition, message) => {
    count++
    process.stdout.write(`record: ${message.value}\n`)
    return false
  })
  process.stdout.write(`messages read: ${count}\n`)
  if (r.error) throw r.error
}

async function main () {
  const [mode, o] = parse(process.argv.slice(2))
  const run = { produce, consume, read }[mode]
  if (!run) usage()
  await run(o)
}

main().then(() => process.exit(0), fail)

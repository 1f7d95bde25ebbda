// Credentials and ACLs with MQTT.js (npm package `mqtt`), driven by test_mqttjs_auth.py.
//
//   node auth.mjs <protocol version: 4 | 5> <host> <port> <client id> <username|-> <password|-> [filter ...]
//
// Connects with the username and password given (`-`: none) and prints one line
// `connack <code>`: 0 when accepted, else the refusal's code as MQTT.js reports it (3.1.1
// return code, or v5 reason code). When accepted, subscribes to each filter in turn and
// prints `suback <filter> <code>` (the granted QoS, or 128 / the v5 reason code).
import mqtt from 'mqtt'

const [versionArg, host, port, clientId, username, password, ...filters] = process.argv.slice(2)
const options = {
  clientId,
  protocolVersion: Number(versionArg),
  reconnectPeriod: 0,
  connectTimeout: 10_000
}
if (username !== '-') options.username = username
if (password !== '-') options.password = password

const client = mqtt.connect(`mqtt://${host}:${port}`, options)
// events.once would reject on 'error': listen to both instead.
const outcome = await new Promise((resolve) => {
  client.once('connect', (connack) => resolve(connack.returnCode ?? connack.reasonCode ?? 0))
  client.once('error', (error) => resolve(error.code ?? `error ${error.message}`))
})
console.log(`connack ${outcome}`)
if (outcome === 0) {
  for (const filter of filters) {
    let code
    try {
      const granted = await client.subscribeAsync(filter, { qos: 1 })
      code = granted[0].qos
    } catch (error) {
      // A refused filter rejects, with the SUBACK: its code per filter is in `granted`.
      code = error.packet?.granted?.[0] ?? `error ${error.message}`
    }
    console.log(`suback ${filter} ${code}`)
  }
}
client.end(true)

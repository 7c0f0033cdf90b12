// Test-only SMSC for msgin5g's Legacy 3GPP Message Gateway, built on the npm
// "smpp" package's server side (not written by us).
//
//   node smsc.js PORT [THROTTLE_FIRST_N]
//
// Prints one JSON line per event on stdout ("listening", "bind", "submit_sm",
// "throttled", "enquire_link", "deliver_sm_resp", "generic_nack", "close"); reads JSON commands on stdin:
//   {"cmd": "mo", "from": MSISDN, "to": NUMBER, "text": "...", "ucs2": false}
//   {"cmd": "garbage"}     sends a PDU with a broken header on every session
//   {"cmd": "bad_body"}    sends a deliver_sm with a truncated body
//   {"cmd": "kick"}        closes every session
// Answers submit_sm with a message id, ESME_RTHROTTLED (0x58) for the first
// THROTTLE_FIRST_N ones, and sends a delivery receipt (stat:DELIVRD, or
// stat:UNDELIV when the destination starts with "999") when
// registered_delivery asks for one.
"use strict";
const smpp = require("smpp");
const readline = require("readline");

const port = parseInt(process.argv[2], 10);
let throttle = parseInt(process.argv[3] || "0", 10);
const sessions = new Set();
let nextId = 1;

function out(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}`;
}

const server = smpp.createServer({}, (session) => {
  sessions.add(session);
  session.on("error", (e) => out({ event: "error", error: String(e) }));
  session.on("close", () => { sessions.delete(session); out({ event: "close" }); });
  for (const kind of ["bind_transceiver", "bind_transmitter", "bind_receiver"]) {
    session.on(kind, (pdu) => {
      out({ event: "bind", kind, system_id: pdu.system_id });
      session.send(pdu.response());
    });
  }
  session.on("enquire_link", (pdu) => { out({ event: "enquire_link" }); session.send(pdu.response()); });
  session.on("unbind", (pdu) => { session.send(pdu.response()); session.close(); });
  session.on("deliver_sm_resp", (pdu) => out({ event: "deliver_sm_resp", status: pdu.command_status }));
  session.on("generic_nack", (pdu) => out({ event: "generic_nack", sequence: pdu.sequence_number }));
  session.on("submit_sm", (pdu) => {
    if (throttle > 0) {
      throttle -= 1;
      out({ event: "throttled", destination: pdu.destination_addr });
      session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
      return;
    }
    const id = `m${nextId++}`;
    const sm = pdu.short_message || {};
    out({
      event: "submit_sm",
      id,
      source: pdu.source_addr,
      destination: pdu.destination_addr,
      data_coding: pdu.data_coding,
      esm_class: pdu.esm_class,
      registered_delivery: pdu.registered_delivery,
      udh: (sm.udh || []).map((u) => Buffer.from(u).toString("hex")),
      text: typeof sm.message === "string" ? sm.message : Buffer.from(sm.message || []).toString("hex"),
    });
    session.send(pdu.response({ message_id: id }));
    if (pdu.registered_delivery & 1) {
      const stat = pdu.destination_addr.startsWith("999") ? "UNDELIV" : "DELIVRD";
      const text = `id:${id} sub:001 dlvrd:${stat === "DELIVRD" ? "001" : "000"} submit date:${stamp()} done date:${stamp()} stat:${stat} err:000 text:`;
      setTimeout(() => session.deliver_sm({
        source_addr: pdu.destination_addr,
        destination_addr: pdu.source_addr,
        esm_class: 4,
        short_message: text,
      }), 20);
    }
  });
});

server.listen(port, "127.0.0.1", () => out({ event: "listening", port }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let cmd;
  try { cmd = JSON.parse(line); } catch (e) { out({ event: "bad_command" }); return; }
  for (const session of sessions) {
    if (cmd.cmd === "mo") {
      session.deliver_sm({
        source_addr: cmd.from,
        destination_addr: cmd.to,
        data_coding: cmd.ucs2 ? 8 : 0,
        short_message: cmd.text,
      });
    } else if (cmd.cmd === "garbage") {
      // a PDU whose command_length (8) is shorter than an SMPP header (16)
      session.socket.write(Buffer.from("00000008000000040000000000000001", "hex"));
    } else if (cmd.cmd === "bad_body") {
      // a deliver_sm whose body ends inside its first C-octet string
      session.socket.write(Buffer.from("00000013000000050000000000000063616263", "hex"));
    } else if (cmd.cmd === "kick") {
      session.destroy();
    }
  }
  out({ event: "done", cmd: cmd.cmd });
});
process.stdin.on("end", () => process.exit(0));

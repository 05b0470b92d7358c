// Run by the offline builder inside the built root, as UID 1000, under the image's Node: fails the build
// unless the native modules code-server needs load and work. The integrated terminal is node-pty (a shell
// must answer through a pseudo-terminal); the file watcher is @parcel/watcher (a new file must be seen);
// the rest must at least load. Every other Linux x86-64 glibc .node file in the tree must dlopen, except the
// Microsoft sign-in broker's (a desktop-only library that needs GTK and WebKit; the extension does without it).
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");

const CS = "/opt/code-server/node_modules/code-server";
const VS = path.join(CS, "lib/vscode/node_modules");
const failures = [];
const fail = (what, err) => {
  failures.push(what);
  console.error(`FAIL ${what}: ${err && err.stack ? err.stack : err}`);
};
const ok = (what) => console.error(`ok   ${what}`);
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: timed out`)), ms))]);

async function terminal() {
  const pty = require(path.join(VS, "node-pty"));
  const out = await withTimeout(
    new Promise((resolve, reject) => {
      let buf = "";
      const p = pty.spawn("/bin/bash", ["-c", "echo terminal-ok $((6 * 7)) $(id -u)"], {
        name: "xterm-256color",
        cols: 80,
        rows: 24,
        cwd: os.homedir(),
        env: process.env,
      });
      p.onData((d) => (buf += d));
      p.onExit(({ exitCode }) => (exitCode === 0 ? resolve(buf) : reject(new Error(`exit ${exitCode}: ${buf}`))));
    }),
    10000,
    "node-pty",
  );
  if (!/terminal-ok 42 1000/.test(out)) throw new Error(`unexpected output ${JSON.stringify(out)}`);
  ok(`node-pty: bash answered through a pty as UID 1000 (${require(path.join(VS, "node-pty/package.json")).version})`);
}

async function watcher() {
  const parcel = require(path.join(VS, "@parcel/watcher"));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "watch-"));
  let sub;
  try {
    const seen = new Promise((resolve, reject) => {
      parcel
        .subscribe(dir, (err, events) => {
          if (err) reject(err);
          else if (events.some((e) => e.type === "create" && e.path.endsWith("new-file"))) resolve();
        })
        .then((s) => {
          sub = s;
          fs.writeFileSync(path.join(dir, "new-file"), "x");
        }, reject);
    });
    await withTimeout(seen, 10000, "@parcel/watcher");
    ok(`@parcel/watcher: saw a new file (${require(path.join(VS, "@parcel/watcher/package.json")).version})`);
  } finally {
    if (sub) await sub.unsubscribe();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function loads(what, dir) {
  try {
    require(dir);
    ok(`${what} loads`);
  } catch (e) {
    fail(what, e);
  }
}

function isLinuxX64Elf(file) {
  const fd = fs.openSync(file, "r");
  try {
    const b = Buffer.alloc(20);
    fs.readSync(fd, b, 0, 20, 0);
    // ELF, 64-bit, OS ABI System V or Linux (not FreeBSD's prebuilds), machine x86-64
    return b.readUInt32BE(0) === 0x7f454c46 && b[4] === 2 && (b[7] === 0 || b[7] === 3) && b.readUInt16LE(18) === 0x3e;
  } finally {
    fs.closeSync(fd);
  }
}

function* nodeFiles(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* nodeFiles(p);
    else if (e.isFile() && e.name.endsWith(".node")) yield p;
  }
}

(async () => {
  for (const [what, fn] of [["terminal (node-pty)", terminal], ["file watcher (@parcel/watcher)", watcher]]) {
    try {
      await fn();
    } catch (e) {
      fail(what, e);
    }
  }
  loads("kerberos", path.join(VS, "kerberos"));
  loads("@vscode/spdlog", path.join(VS, "@vscode/spdlog"));
  loads("@vscode/native-watchdog", path.join(VS, "@vscode/native-watchdog"));
  loads("@vscode/sqlite3", path.join(VS, "@vscode/sqlite3"));
  loads("argon2 (code-server's hashed passwords)", require.resolve("argon2", { paths: [CS] }));
  let count = 0;
  for (const file of nodeFiles("/opt/code-server/node_modules")) {
    if (/musl|alpine/.test(file) || !isLinuxX64Elf(file)) continue;
    count++;
    try {
      process.dlopen({ exports: {} }, file);
    } catch (e) {
      if (/self-register|already registered/.test(String(e))) continue;
      if (file.includes("/extensions/microsoft-authentication/")) {
        count--;
        console.error(`skip ${path.basename(file)} (desktop sign-in broker): ${String(e).split("\n")[0]}`);
      } else fail(`dlopen ${file}`, e);
    }
  }
  ok(`${count} linux-x64 .node files dlopen`);
  if (failures.length) {
    console.error(`native modules: ${failures.length} failed: ${failures.join(", ")}`);
    process.exit(1);
  }
  console.error("native modules: all ok");
})();

// Compile src/*.sol with the pinned solc-js and write artifacts/<Contract>.json.
// `node build.js --check` rebuilds in memory and fails if the committed artifacts differ, so
// artifacts/ always matches the sources. Nodes load artifacts/ and need neither Node.js nor solc.
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const HERE = __dirname;
const SETTINGS = {
  // Through the IR pipeline: the settlement contract was 19.5k instead of 24.4k of the 24 KiB
  // code limit (EIP-170), which leaves room to grow, at the same gas per settled job and a
  // fifth less to deploy (compiling takes about 9 s instead of 3).
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  viaIR: true,
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function sha256(text) {
  return crypto.createHash("sha256").update(text).digest("hex");
}

function findImport(p) {
  const file = path.join(HERE, "node_modules", p);
  if (!fs.existsSync(file)) return { error: `not found: ${p}` };
  return { contents: fs.readFileSync(file, "utf8") };
}

function build() {
  const sources = {};
  for (const name of fs.readdirSync(path.join(HERE, "src")).sort()) {
    if (name.endsWith(".sol")) {
      sources[`src/${name}`] = { content: fs.readFileSync(path.join(HERE, "src", name), "utf8") };
    }
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  if (errors.length) throw new Error(errors.map((e) => e.formattedMessage).join("\n"));
  // Every file that went into the build (ours and OpenZeppelin's), with its hash.
  const used = {};
  for (const name of Object.keys(out.sources).sort()) {
    const text = sources[name] ? sources[name].content : findImport(name).contents;
    used[name] = sha256(text);
  }
  const sourceHash = sha256(JSON.stringify(used));
  const artifacts = {};
  for (const file of Object.keys(sources)) {
    for (const [name, c] of Object.entries(out.contracts[file] || {})) {
      if (!c.evm.bytecode.object) continue; // abstract: part of another contract
      artifacts[name] = {
        contract: name,
        source: file,
        compiler: { name: "solc-js", version: solc.version() },
        settings: SETTINGS,
        sourceHash,
        sources: used,
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      };
    }
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes("--check");
  const dir = path.join(HERE, "artifacts");
  const artifacts = build();
  let stale = 0;
  for (const [name, art] of Object.entries(artifacts)) {
    const file = path.join(dir, `${name}.json`);
    const text = JSON.stringify(art, null, 2) + "\n";
    if (check) {
      const old = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
      if (old !== text) {
        console.error(`stale: ${path.relative(HERE, file)} differs from a fresh build`);
        stale++;
      }
    } else {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(file, text);
      console.log(`wrote ${path.relative(HERE, file)} (${(art.deployedBytecode.length - 2) / 2} bytes)`);
    }
  }
  if (check) {
    if (stale) process.exit(1);
    console.log(`artifacts match the sources (${Object.keys(artifacts).length} contracts)`);
  }
}

main();

// Fixed test vectors from @openzeppelin/merkle-tree, for the Python tree in
// consensus/settlement/merkle.py: `node merkle-vectors.js > ../tests/unit/settlement/merkle_vectors.json`.
"use strict";
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

function addr(i) {
  return "0x" + (i * 0x1111111 + 0xabc).toString(16).padStart(40, "0");
}
function b32(i) {
  return "0x" + i.toString(16).padStart(64, "0");
}

const cases = [];
for (const n of [1, 2, 3, 5, 8, 13]) {
  const earnings = [];
  for (let i = 0; i < n; i++) earnings.push([addr(i + 1), (10n ** 15n * BigInt(i * 7 + 1)).toString()]);
  const entries = [];
  for (let i = 0; i < n; i++) {
    entries.push([addr(100 + (i % 2)), addr(i + 1), b32(i + 1), b32((i << 8) | 1), (12345n * BigInt(i + 1)).toString(), (1000n * BigInt(i)).toString()]);
  }
  for (const [kind, types, values] of [
    ["earnings", ["address", "uint256"], earnings],
    ["entries", ["address", "address", "bytes32", "bytes32", "uint256", "uint256"], entries],
  ]) {
    const tree = StandardMerkleTree.of(values, types);
    const proofs = values.map((v) => tree.getProof(v));
    // every other value and the last: a multiproof over leaves spread across the tree
    const some = values.map((_, i) => i).filter((i) => i % 2 === 0 || i === n - 1);
    const multi = tree.getMultiProof(some);
    cases.push({ kind, types, values, root: tree.root, proofs, multi });
  }
}
console.log(JSON.stringify(cases, null, 1));

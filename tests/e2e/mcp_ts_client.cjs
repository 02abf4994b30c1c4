// A client built on the TypeScript MCP SDK, as most agents are: it starts the server given as a JSON argv
// ({command, args, cwd}) over stdio, calls one tool with the SDK's default request timeout (60 s) and prints
// {"timeout_ms", "seconds", "result"} as JSON. The SDK comes from the directory in OFFLOAD_TEST_MCP_TS_SDK.
"use strict";
const path = require("path");

const sdk = path.join(process.env.OFFLOAD_TEST_MCP_TS_SDK, "node_modules", "@modelcontextprotocol", "sdk", "dist",
                      "cjs");
const { Client } = require(path.join(sdk, "client", "index.js"));
const { StdioClientTransport } = require(path.join(sdk, "client", "stdio.js"));
const { DEFAULT_REQUEST_TIMEOUT_MSEC } = require(path.join(sdk, "shared", "protocol.js"));

async function main() {
  const [server, tool, args] = process.argv.slice(2).map((a) => JSON.parse(a));
  const transport = new StdioClientTransport({ command: server.command, args: server.args, cwd: server.cwd,
                                              env: process.env, stderr: "inherit" });
  const client = new Client({ name: "offload-test", version: "0" });
  await client.connect(transport);
  const started = Date.now();
  const result = await client.callTool({ name: tool, arguments: args });  // no options: the default timeout
  const seconds = (Date.now() - started) / 1000;
  await client.close();
  process.stdout.write(JSON.stringify({ timeout_ms: DEFAULT_REQUEST_TIMEOUT_MSEC, seconds, result }) + "\n");
}

main().catch((e) => {
  process.stderr.write(`mcp_ts_client: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});

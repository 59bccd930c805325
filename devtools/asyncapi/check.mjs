// Parse an AsyncAPI document with the official parser (@asyncapi/parser) and
// print its diagnostics as JSON: {"ok": bool, "errors": [...], "warnings": [...]}.
// Usage: node check.mjs path/to/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, process.argv[2]).parse();
const shown = (d) => ({ code: d.code, message: d.message, path: d.path });
const errors = diagnostics.filter((d) => d.severity === 0).map(shown);
const warnings = diagnostics.filter((d) => d.severity === 1).map(shown);
const messages = document
  ? document.allMessages().all().map((m) => ({
      id: m.id(),
      name: m.name(),
      payloadType: m.payload()?.type() ?? null,
      schemaFormat: m.schemaFormat(),
    }))
  : [];
console.log(JSON.stringify({ ok: Boolean(document) && errors.length === 0, errors, warnings, messages }));

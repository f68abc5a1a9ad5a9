// A minimal TypeScript loader for the child processes the reliability tests spawn
// (`node -r ./test/scripts/register-ts.cjs script.ts`): each .ts file is transpiled on require
// with the project's own TypeScript, as CommonJS, in place, so lib/native.ts still finds the
// addon relative to its real __dirname. Types are not checked here (`npm run typecheck` does).
'use strict';
const fs = require('node:fs');
const ts = require('typescript');

const compilerOptions = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  esModuleInterop: true,
  sourceMap: false,
  inlineSourceMap: true,
};

require.extensions['.ts'] = function loadTs(module, filename) {
  const source = fs.readFileSync(filename, 'utf8');
  const { outputText } = ts.transpileModule(source, { compilerOptions, fileName: filename });
  module._compile(outputText, filename);
};

export { GrammarLibrary } from './library.js';
export type { Grammar, GrammarCheck, GrammarLibraryOptions, GrammarListPage, GrammarSummary } from './library.js';
export { BUILTIN_GRAMMARS, BUILTIN_NAMES } from './builtins.js';
export type { BuiltinSeed } from './grammar-db.js';
export {
  parseGrammarBody,
  parseListQuery,
  checkListOptions,
  checkGrammarName,
  isGrammarName,
  definesRule,
  DEFAULT_LIST_LIMIT,
  GRAMMAR_NAME_PATTERN,
  MAX_DESCRIPTION_LENGTH,
  MAX_GRAMMAR_CONTENT_BYTES,
  MAX_LIST_LIMIT,
  RULE_NAME_PATTERN,
} from './validate.js';
export type { GrammarInput, GrammarPatch, ListOptions, ParsedGrammarInput } from './validate.js';
export { SCHEMA_VERSION } from './schema.js';

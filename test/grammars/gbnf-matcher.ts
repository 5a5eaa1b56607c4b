/**
 * A small exact recognizer for GBNF, for tests: does a grammar's language contain a string?
 *
 * It reads the GBNF that llama.cpp reads (rules `name ::= …` one per line, continuation lines
 * inside parentheses, `#` comments, "literals" and [classes] with \x \u \U \t \r \n \\ \" \[ \]
 * escapes, negated classes, `.`, groups, `|`, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`) and
 * decides membership by computing, for each position, the set of positions each rule can end
 * at (memoized), so the answer is the context-free language's, not a greedy matcher's. Rules
 * must not be left-recursive (llama.cpp refuses those too).
 */

type Node =
  | { kind: 'lit'; cps: number[] }
  | { kind: 'cls'; ranges: Array<[number, number]>; negated: boolean }
  | { kind: 'any' }
  | { kind: 'ref'; name: string }
  | { kind: 'seq'; items: Node[] }
  | { kind: 'alt'; options: Node[] }
  | { kind: 'rep'; node: Node; min: number; max: number };

const WORD = /[a-zA-Z0-9-]/;

class Parser {
  readonly rules = new Map<string, Node>();
  #i = 0;

  constructor(readonly text: string) {}

  parse(): Map<string, Node> {
    this.#space(true);
    while (this.#i < this.text.length) {
      const name = this.#name();
      this.#space(false);
      if (!this.text.startsWith('::=', this.#i)) this.#fail('expected ::=');
      this.#i += 3;
      this.#space(true);
      this.rules.set(name, this.#alternates(false));
      this.#space(true);
    }
    return this.rules;
  }

  #fail(why: string): never {
    throw new Error(`${why} at offset ${this.#i}: ${JSON.stringify(this.text.slice(this.#i, this.#i + 20))}`);
  }

  #space(newlines: boolean): void {
    while (this.#i < this.text.length) {
      const c = this.text[this.#i] as string;
      if (c === '#') {
        while (this.#i < this.text.length && this.text[this.#i] !== '\n' && this.text[this.#i] !== '\r') this.#i++;
      } else if (c === ' ' || c === '\t' || (newlines && (c === '\n' || c === '\r'))) {
        this.#i++;
      } else {
        break;
      }
    }
  }

  #name(): string {
    const start = this.#i;
    while (this.#i < this.text.length && WORD.test(this.text[this.#i] as string)) this.#i++;
    if (this.#i === start) this.#fail('expected a name');
    return this.text.slice(start, this.#i);
  }

  #alternates(nested: boolean): Node {
    const options = [this.#sequence(nested)];
    while (this.text[this.#i] === '|') {
      this.#i++;
      this.#space(true);
      options.push(this.#sequence(nested));
    }
    return options.length === 1 ? (options[0] as Node) : { kind: 'alt', options };
  }

  #sequence(nested: boolean): Node {
    const items: Node[] = [];
    while (this.#i < this.text.length) {
      const c = this.text[this.#i] as string;
      let item: Node;
      if (c === '"') {
        this.#i++;
        const cps: number[] = [];
        while (this.text[this.#i] !== '"') {
          if (this.#i >= this.text.length) this.#fail('unterminated literal');
          cps.push(this.#char());
        }
        this.#i++;
        item = { kind: 'lit', cps };
      } else if (c === '[') {
        this.#i++;
        const negated = this.text[this.#i] === '^';
        if (negated) this.#i++;
        const ranges: Array<[number, number]> = [];
        while (this.text[this.#i] !== ']') {
          if (this.#i >= this.text.length) this.#fail('unterminated class');
          const lo = this.#char();
          if (this.text[this.#i] === '-' && this.text[this.#i + 1] !== ']') {
            this.#i++;
            ranges.push([lo, this.#char()]);
          } else {
            ranges.push([lo, lo]);
          }
        }
        this.#i++;
        item = { kind: 'cls', ranges, negated };
      } else if (c === '.') {
        this.#i++;
        item = { kind: 'any' };
      } else if (c === '(') {
        this.#i++;
        this.#space(true);
        item = this.#alternates(true);
        if (this.text[this.#i] !== ')') this.#fail('expected )');
        this.#i++;
      } else if (WORD.test(c)) {
        const save = this.#i;
        const name = this.#name();
        // `name ::=` on the next line starts a new rule (only reachable when newlines were skipped).
        const after = this.text.slice(this.#i).match(/^[ \t]*::=/);
        if (after) {
          this.#i = save;
          break;
        }
        item = { kind: 'ref', name };
      } else {
        break;
      }
      this.#space(nested);
      // postfix operators
      for (;;) {
        const p = this.text[this.#i];
        if (p === '*') item = { kind: 'rep', node: item, min: 0, max: Infinity };
        else if (p === '+') item = { kind: 'rep', node: item, min: 1, max: Infinity };
        else if (p === '?') item = { kind: 'rep', node: item, min: 0, max: 1 };
        else if (p === '{') {
          const m = /^\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}/.exec(this.text.slice(this.#i));
          if (!m) this.#fail('bad repetition');
          const min = Number(m[1]);
          const max = m[3] !== undefined && m[3] !== '' ? Number(m[3]) : m[2] ? Infinity : min;
          item = { kind: 'rep', node: item, min, max };
          this.#i += m[0].length - 1;
        } else break;
        this.#i++;
        this.#space(nested);
      }
      items.push(item);
    }
    return items.length === 1 ? (items[0] as Node) : { kind: 'seq', items };
  }

  /** One (possibly escaped) character of a literal or class, as a code point. */
  #char(): number {
    const c = this.text[this.#i] as string;
    if (c === '\\') {
      const e = this.text[this.#i + 1];
      const hex = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
      if (hex > 0) {
        const digits = this.text.slice(this.#i + 2, this.#i + 2 + hex);
        if (!/^[0-9a-fA-F]+$/.test(digits) || digits.length !== hex) this.#fail('bad hex escape');
        this.#i += 2 + hex;
        return parseInt(digits, 16);
      }
      const simple: Record<string, number> = { t: 9, r: 13, n: 10, '\\': 92, '"': 34, '[': 91, ']': 93 };
      const cp = e === undefined ? undefined : simple[e];
      if (cp === undefined) this.#fail('unknown escape');
      this.#i += 2;
      return cp;
    }
    const cp = this.text.codePointAt(this.#i) as number;
    this.#i += cp > 0xffff ? 2 : 1;
    return cp;
  }
}

/** A parsed grammar: `matches(text)` tells whether `text` is in the language of `root`. */
export class GbnfMatcher {
  readonly #rules: Map<string, Node>;
  readonly #root: string;

  constructor(grammar: string, root = 'root') {
    this.#rules = new Parser(grammar).parse();
    for (const name of this.#refs()) if (!this.#rules.has(name)) throw new Error(`undefined rule ${name}`);
    if (!this.#rules.has(root)) throw new Error(`no rule ${root}`);
    this.#root = root;
  }

  matches(text: string): boolean {
    const cps = Array.from(text, (c) => c.codePointAt(0) as number);
    const memo = new Map<string, Set<number>>();
    const ends = (node: Node, pos: number): Set<number> => {
      switch (node.kind) {
        case 'lit': {
          for (let k = 0; k < node.cps.length; k++) if (cps[pos + k] !== node.cps[k]) return new Set();
          return new Set([pos + node.cps.length]);
        }
        case 'cls': {
          const cp = cps[pos];
          if (cp === undefined) return new Set();
          const inside = node.ranges.some(([lo, hi]) => cp >= lo && cp <= hi);
          return inside !== node.negated ? new Set([pos + 1]) : new Set();
        }
        case 'any':
          return pos < cps.length ? new Set([pos + 1]) : new Set();
        case 'ref': {
          const key = `${node.name}@${pos}`;
          const known = memo.get(key);
          if (known) return known;
          memo.set(key, new Set()); // a left-recursive path ends nowhere
          const result = ends(this.#rules.get(node.name) as Node, pos);
          memo.set(key, result);
          return result;
        }
        case 'seq': {
          let current = new Set([pos]);
          for (const item of node.items) {
            const next = new Set<number>();
            for (const p of current) for (const q of ends(item, p)) next.add(q);
            current = next;
            if (current.size === 0) break;
          }
          return current;
        }
        case 'alt': {
          const out = new Set<number>();
          for (const option of node.options) for (const q of ends(option, pos)) out.add(q);
          return out;
        }
        case 'rep': {
          const out = new Set<number>();
          if (node.min === 0) out.add(pos);
          let frontier = new Set([pos]);
          const seen = new Set([pos]);
          for (let k = 1; k <= node.max && frontier.size > 0; k++) {
            const next = new Set<number>();
            for (const p of frontier) for (const q of ends(node.node, p)) next.add(q);
            if (k >= node.min) for (const q of next) out.add(q);
            if (node.max === Infinity && k >= node.min) {
              frontier = new Set([...next].filter((q) => !seen.has(q)));
              for (const q of next) seen.add(q);
            } else {
              frontier = next;
            }
          }
          return out;
        }
      }
    };
    return ends({ kind: 'ref', name: this.#root }, 0).has(cps.length);
  }

  #refs(): Set<string> {
    const names = new Set<string>();
    const walk = (node: Node): void => {
      if (node.kind === 'ref') names.add(node.name);
      else if (node.kind === 'seq') node.items.forEach(walk);
      else if (node.kind === 'alt') node.options.forEach(walk);
      else if (node.kind === 'rep') walk(node.node);
    };
    for (const node of this.#rules.values()) walk(node);
    return names;
  }
}

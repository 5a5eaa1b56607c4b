import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test, describe, before, after } from 'node:test';
import { LmError, loadModel, reportedNativeMemory, type Model } from '@lmserve/engine';
import { modelPath, countTicks } from '../helpers.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

describe('model loading and info', () => {
  let model: Model;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
  });
  after(() => model.dispose());

  test('reports architecture, size, context, template and special tokens', () => {
    const info = model.info;
    assert.equal(info.architecture, 'llama');
    assert.equal(info.vocabSize, 32000);
    assert.equal(info.vocabType, 'spm');
    assert.equal(info.trainedContextLength, 2048);
    assert.ok(info.parameterCount > 4_000_000 && info.parameterCount < 5_000_000, `params ${info.parameterCount}`);
    assert.ok(info.fileSize > info.sizeBytes * 0.9, 'fileSize covers the tensors');
    assert.match(info.chatTemplate ?? '', /\[INST\]/);
    assert.equal(info.specialTokens.bos?.id, 1);
    assert.equal(info.specialTokens.eos?.id, 2);
    assert.ok(info.eogTokens.includes(2));
  });

  test('loads a second architecture with a BPE tokenizer and a ChatML template', async () => {
    const bpe = await loadModel(await modelPath('tiny-bpe'));
    try {
      assert.equal(bpe.info.architecture, 'qwen2');
      assert.equal(bpe.info.vocabType, 'bpe');
      const prompt = bpe.applyChatTemplate([{ role: 'user', content: 'hi' }]);
      assert.equal(prompt, '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
      const ids = bpe.tokenize(prompt, { parseSpecial: true });
      assert.ok(ids.includes(151644), '<|im_start|> is one special token');
    } finally {
      bpe.dispose();
    }
  });

  test('renders chat templates with Jinja, including ones the built-in matcher does not know', async () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ];
    assert.equal(model.applyChatTemplate(messages), '[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]');
    const custom = '{% for m in messages %}<<{{ m.role }}:{{ m.content }}>>{% endfor %}{% if add_generation_prompt %}<<assistant:{% endif %}';
    assert.equal(model.applyChatTemplate(messages, { template: custom }), '<<system:Be brief.>><<user:Hi>><<assistant:');
    assert.equal(model.applyChatTemplate(messages, { template: custom, addAssistant: false }), '<<system:Be brief.>><<user:Hi>>');
    assert.throws(() => model.applyChatTemplate(messages, { template: '{% for m in messages %}' }), { code: 'INVALID_REQUEST' });
    assert.throws(() => model.applyChatTemplate([{ role: 'user' } as never]), { code: 'INVALID_REQUEST' });
  });

  test('reports load progress from 0 to 1', async () => {
    const seen: number[] = [];
    const m = await loadModel(await modelPath('tiny-bpe'), { onProgress: (p) => seen.push(p) });
    m.dispose();
    assert.ok(seen.length > 0);
    assert.equal(seen.at(-1), 1);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen, 'progress is monotonic');
  });

  test('the event loop keeps turning while a model loads', async () => {
    // tiny-bpe has a 152k-token vocabulary: loading takes a few hundred ms off the JS thread.
    const path = await modelPath('tiny-bpe');
    const { value: m, ticks } = await countTicks(() => loadModel(path));
    m.dispose();
    assert.ok(ticks >= 5, `only ${ticks} ticks during the load`);
  });

  test('an aborted load rejects with LOAD_ABORTED', async () => {
    const controller = new AbortController();
    const pending = loadModel(await modelPath('tiny-bpe'), {
      signal: controller.signal,
      useMmap: false,
      onProgress: () => controller.abort(),
    });
    await assert.rejects(pending, { code: 'LOAD_ABORTED' });
  });
});

describe('tokenizer', () => {
  let model: Model;
  before(async () => {
    model = await loadModel(await modelPath('tiny'));
  });
  after(() => model.dispose());

  for (const text of ['Hello world', '日本語のテキスト、中文文本', 'emoji 🎉🚀 and ZWJ 👩‍💻 naïve café', 'mixed 한국어 ✓ ∑ 𝔘']) {
    test(`round-trips ${JSON.stringify(text)}`, () => {
      const ids = model.tokenize(text, { addSpecial: false });
      assert.ok(ids.length > 0);
      assert.equal(model.detokenize(ids), text);
    });
  }

  test('adds BOS when asked and renders special tokens only when asked', () => {
    const ids = model.tokenize('Hi', { addSpecial: true });
    assert.equal(ids[0], 1);
    assert.equal(model.detokenize(ids), 'Hi');
    assert.equal(model.detokenize(ids, { special: true }), '<s> Hi');
  });

  test('detokenize rejects ids outside the vocabulary', () => {
    assert.throws(() => model.detokenize([5, 32000]), { code: 'INVALID_REQUEST' });
    assert.throws(() => model.detokenize([-1]), { code: 'INVALID_REQUEST' });
  });
});

describe('a vocab-only model (for a grammar checker process)', () => {
  test('tokenizes and checks grammars without weights, and cannot run an engine', async () => {
    const path = await modelPath('tiny');
    const before = reportedNativeMemory();
    const vocab = await loadModel(path, { vocabOnly: true });
    const full = await loadModel(path);
    try {
      assert.ok(reportedNativeMemory() - before < full.info.sizeBytes * 1.5, 'only the full load reports its weights');
      assert.equal(vocab.info.vocabSize, 32000);
      assert.deepEqual(vocab.tokenize('Hello world'), full.tokenize('Hello world'));
      assert.equal(vocab.checkGrammar('root ::= "a" | "b"'), null);
      assert.equal(typeof vocab.checkGrammar('root ::= ('), 'string');
      assert.equal(typeof vocab.checkGrammar('root ::= missing-rule'), 'string');
      await assert.rejects(vocab.createEngine({ slots: 1, contextSize: 64 }), (err: unknown) => {
        assert.ok(err instanceof LmError && err.code === 'INVALID_REQUEST', String(err));
        return true;
      });
      await assert.rejects(vocab.generate('x', { maxTokens: 1 }).result, { code: 'INVALID_REQUEST' });
      // Not shared with the full load of the same file: that one still generates.
      vocab.dispose();
      const result = await full.generate('still whole', { maxTokens: 3, ignoreEos: true }).result;
      assert.equal(result.usage.tokensOut, 3);
    } finally {
      vocab.dispose();
      full.dispose();
    }
  });
});

describe('setProcessMemoryLimit', () => {
  test('rejects a negative or fractional limit', async () => {
    const { setProcessMemoryLimit } = await import('@lmserve/engine');
    assert.throws(() => setProcessMemoryLimit(-1), { code: 'INVALID_REQUEST' });
    assert.throws(() => setProcessMemoryLimit(1.5), { code: 'INVALID_REQUEST' });
  });

  test('an allocation beyond the limit throws in the process, which lives on', { skip: process.platform !== 'linux' }, () => {
    // In a child: the limit holds for the whole process and cannot be raised past it again.
    const script = `
      import { readFileSync } from 'node:fs';
      import { setProcessMemoryLimit, systemInfo } from '@lmserve/engine';
      systemInfo(); // the addon (and llama.cpp's backends) is loaded before VmSize is read
      const vmSize = Number(/VmSize:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
      const limited = setProcessMemoryLimit(vmSize + 256 * 1024 * 1024);
      let outcome;
      try {
        const big = Buffer.alloc(1024 * 1024 * 1024);
        outcome = 'allocated ' + big.length;
      } catch (err) {
        outcome = 'threw ' + err.name;
      }
      const small = Buffer.alloc(1024 * 1024); // still works under the limit
      process.stdout.write(JSON.stringify({ limited, outcome, small: small.length }));
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(child.error, undefined, String(child.error));
    assert.equal(child.status, 0, `exit ${child.status} ${child.signal ?? ''}: ${child.stderr}`);
    assert.deepEqual(JSON.parse(child.stdout), { limited: true, outcome: 'threw RangeError', small: 1024 * 1024 });
  });
});

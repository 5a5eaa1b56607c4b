/**
 * The measuring process: sizes one model for one worker's settings with llama.cpp's own no_alloc
 * load (and, for GPU_LAYERS=auto on a GPU build, llama.cpp's fit), prints one JSON line and
 * exits. The supervisor starts it before spawning a model host (fit before load), so it never
 * loads the addon itself: whatever a malformed file does to llama.cpp ends this process only.
 */
import { measureModel, type ModelMeasurement, type ModelPlacement, type NativeEngineOptions } from '@lmserve/engine';
import { toLmError } from '@lmserve/protocol';

export interface MeasureRequest {
  path: string;
  load: ModelPlacement;
  engine: Partial<Omit<NativeEngineOptions, 'memoryBytes'>>;
  fit: { replicas: number; marginBytes: number };
}

export type MeasureReply = { ok: true; measurement: ModelMeasurement } | { ok: false; code: string; message: string };

function main(): void {
  let reply: MeasureReply;
  try {
    const request = JSON.parse(process.argv[2] ?? '') as MeasureRequest;
    reply = { ok: true, measurement: measureModel(request.path, request.load, request.engine, request.fit) };
  } catch (err) {
    const error = toLmError(err);
    reply = { ok: false, code: error.code, message: error.message };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`, () => process.exit(0));
}

main();

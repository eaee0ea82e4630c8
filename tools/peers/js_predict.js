// Predictions of @vladmandic/face-api or @vladmandic/human on a folder of face crops, for
// tools/peers/compare.py. Pure-JS/WASM: TensorFlow.js with its WASM backend, the .wasm files and
// the models read from node_modules (no network). Human fetches its models over HTTP, so they are
// served from node_modules on a loopback port for the length of the run.
//
//   node js_predict.js --peer faceapi|human DATA_DIR --glob 'PrivateTest_*' -o OUT.json
//
// --mode detect (default): the library's own pipeline. Small pictures (FER2013 and CK+48 are
// 48x48) are upscaled by an integer factor to a side of at least 192 px and given a black border
// of --pad times the side (default 1.0: on a sample of PublicTest, the validation split, face-api's
// SSD found 28 of 36 faces with it, 11 with edgefer's 0.5 and none without a border), so the
// detector sees a face it can find. A picture where no face is found gets the prediction null.
// --mode crop: the expression model alone, fed the face crop directly (as fer's classifier is in
// fer_predict.py): face-api's expression net, or human's emotion model with human's own
// preprocessing (resize to 64x64, gray by its RGB weights, scaled to [-1, 1]). --sample N: only the first N pictures in md5(path) order, a
// reproducible random sample; the output file is rewritten every 10 pictures, so a run stopped
// early still leaves a valid (smaller) random sample. --every K: every Kth picture in sorted path
// order (on CK+48, --every 3 is one of the three frames of each sequence).

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const image = require('@canvas/image');

const MIN_SIDE = 192;
// face-api's expression names -> FER2013 classes (human's emotion model already uses FER2013's).
const HUMAN_GRAY_LABELS = ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'];
const HUMAN_RGB_WEIGHTS = [0.2989, 0.5870, 0.1140];
const FACEAPI_TO_FER = {
  angry: 'angry', disgusted: 'disgust', fearful: 'fear', happy: 'happy', sad: 'sad',
  surprised: 'surprise', neutral: 'neutral',
};

function parseArgs(argv) {
  const args = {
    glob: '*', peer: 'faceapi', mode: 'detect', detector: 'ssd', minConfidence: 0.1, pad: 1.0, sample: 0, every: 1,
  };
  const rest = [];
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--glob') args.glob = argv[++i];
    else if (flag === '-o' || flag === '--output') args.output = argv[++i];
    else if (flag === '--peer') args.peer = argv[++i];
    else if (flag === '--detector') args.detector = argv[++i];
    else if (flag === '--min-confidence') args.minConfidence = Number(argv[++i]);
    else if (flag === '--mode') args.mode = argv[++i];
    else if (flag === '--pad') args.pad = Number(argv[++i]);
    else if (flag === '--sample') args.sample = Number(argv[++i]);
    else if (flag === '--every') args.every = Number(argv[++i]);
    else rest.push(flag);
  }
  [args.dataDir] = rest;
  const valid = ['faceapi', 'human'].includes(args.peer) && ['detect', 'crop'].includes(args.mode)
    && args.sample >= 0 && args.every >= 1 && args.pad >= 0;
  if (!args.dataDir || !args.output || !valid) {
    console.error('usage: node js_predict.js --peer faceapi|human DATA_DIR [--glob G] [--every K] [--sample N]'
      + ' [--mode detect|crop] [--detector ssd|tiny] [--pad SHARE] -o OUT.json');
    process.exit(2);
  }
  return args;
}

function globToRegExp(glob) {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

function listImages(dataDir, glob) {
  const pattern = globToRegExp(glob);
  const files = [];
  for (const label of fs.readdirSync(dataDir).sort()) {
    const folder = path.join(dataDir, label);
    if (!fs.statSync(folder).isDirectory()) continue;
    for (const name of fs.readdirSync(folder)) if (pattern.test(name)) files.push(`${label}/${name}`);
  }
  return files.sort();
}

async function readTensor(tf, file, padShare) {
  const picture = await image.imageFromBuffer(fs.readFileSync(file));
  const rgba = image.getImageData(picture);
  return tf.tidy(() => { // functional ops only: human's bundled tfjs has no chained ones
    const pixels = tf.tensor3d(Uint8Array.from(rgba.data), [rgba.height, rgba.width, 4], 'int32');
    const rgb = tf.cast(tf.slice(pixels, [0, 0, 0], [-1, -1, 3]), 'float32');
    const side = Math.min(rgba.height, rgba.width);
    if (padShare === null || side >= MIN_SIDE) return tf.cast(rgb, 'int32');
    const factor = Math.ceil(MIN_SIDE / side);
    const big = tf.image.resizeBilinear(rgb, [rgba.height * factor, rgba.width * factor]);
    const pad = Math.floor(padShare * side * factor);
    const padded = tf.pad(big, [[pad, pad], [pad, pad], [0, 0]]);
    return tf.cast(tf.clipByValue(tf.round(padded), 0, 255), 'int32');
  });
}

function md5Order(files) {
  const key = (file) => crypto.createHash('md5').update(file).digest('hex');
  return files.map((file) => [key(file), file]).sort().map(([, file]) => file);
}

function writeResult(args, peer, images, seconds, planned) {
  const packageName = args.peer === 'human' ? '@vladmandic/human' : '@vladmandic/face-api';
  const parts = [];
  if (args.every > 1) parts.push(`1 in ${args.every}, in path order`);
  if (args.sample) parts.push(`random sample: first ${images.length} in md5(path) order`);
  const subset = parts.join('; ') || null;
  const result = {
    peer: packageName, version: peer.version, variant: peer.variant, backend: peer.backend,
    data_dir: args.dataDir, glob: args.glob, subset, complete: images.length === planned,
    seconds_per_image: seconds / Math.max(images.length, 1), images,
  };
  fs.mkdirSync(path.dirname(path.resolve(args.output)), { recursive: true });
  fs.writeFileSync(`${args.output}.part`, JSON.stringify(result, null, 1));
  fs.renameSync(`${args.output}.part`, args.output);
}

function wasmDir() {
  return `${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`;
}

async function faceApiPeer(args) {
  const tf = require('@tensorflow/tfjs');
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
  wasm.setWasmPaths(wasmDir());
  await tf.setBackend('wasm');
  await tf.ready();
  const modelDir = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');
  const detectorNet = args.detector === 'tiny' ? faceapi.nets.tinyFaceDetector : faceapi.nets.ssdMobilenetv1;
  await detectorNet.loadFromDisk(modelDir);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(modelDir);
  await faceapi.nets.faceExpressionNet.loadFromDisk(modelDir);
  const options = args.detector === 'tiny'
    ? new faceapi.TinyFaceDetectorOptions({ scoreThreshold: args.minConfidence })
    : new faceapi.SsdMobilenetv1Options({ minConfidence: args.minConfidence, maxResults: 10 });
  if (args.mode === 'crop') {
    return {
      tf,
      version: faceapi.version,
      variant: 'expression net alone, fed the face crop directly',
      backend: `tfjs ${tf.version_core}, ${tf.getBackend()}`,
      async predict(tensor) {
        const expressions = await faceapi.nets.faceExpressionNet.predictExpressions(tensor);
        return FACEAPI_TO_FER[expressions.asSortedArray()[0].expression];
      },
    };
  }
  return {
    tf,
    version: faceapi.version,
    variant: `${args.detector === 'tiny' ? 'TinyFaceDetector' : 'SsdMobilenetv1'} (min confidence ${args.minConfidence}) + 68-landmark alignment + expression net, border ${args.pad}`,
    backend: `tfjs ${tf.version_core}, ${tf.getBackend()}`,
    async predict(tensor) {
      const faces = await faceapi.detectAllFaces(tensor, options).withFaceLandmarks().withFaceExpressions();
      if (!faces.length) return null;
      const best = faces.reduce((a, b) => (b.detection.score > a.detection.score ? b : a));
      const [top] = best.expressions.asSortedArray();
      return FACEAPI_TO_FER[top.expression];
    },
  };
}

function serveFolder(folder) {
  const server = http.createServer((request, response) => {
    const file = path.join(folder, path.basename(decodeURIComponent(request.url)));
    fs.readFile(file, (err, data) => {
      response.writeHead(err ? 404 : 200);
      response.end(err ? '' : data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function humanPeer(args) {
  // Human's exports map only offers the tfjs-node build; its WASM build is loaded by file name.
  const dist = path.dirname(require.resolve('@vladmandic/human'));
  const { Human } = require(path.join(dist, 'human.node-wasm.js'));
  const modelDir = path.join(dist, '..', 'models');
  const server = await serveFolder(modelDir);
  const human = new Human({
    backend: 'wasm',
    wasmPath: wasmDir(),
    modelBasePath: `http://127.0.0.1:${server.address().port}/`,
    cacheSensitivity: 0, // every picture is processed, never answered from the previous one
    warmup: 'none',
    face: {
      enabled: true,
      detector: { maxDetected: 1, minConfidence: args.minConfidence },
      mesh: { enabled: true },
      iris: { enabled: false },
      emotion: { enabled: true, minConfidence: 0 },
      description: { enabled: false },
    },
    body: { enabled: false },
    hand: { enabled: false },
    object: { enabled: false },
    gesture: { enabled: false },
    segmentation: { enabled: false },
  });
  await human.load();
  await human.tf.ready();
  server.close();
  if (args.mode === 'crop') return humanEmotionAlone(human);
  return {
    tf: human.tf,
    version: human.version,
    variant: `blazeface (min confidence ${args.minConfidence}) + facemesh crop + emotion model, border ${args.pad}`,
    backend: `tfjs ${human.tf.version_core}, ${human.tf.getBackend()}`,
    async predict(tensor) {
      const batch = human.tf.expandDims(tensor, 0);
      const result = await human.detect(batch);
      human.tf.dispose(batch);
      const face = result.face[0];
      if (!face || !face.emotion || !face.emotion.length) return null;
      return face.emotion[0].emotion;
    },
  };
}

function humanEmotionAlone(human) {
  const { tf } = human;
  const model = human.models.models.emotion;
  const side = model.inputs[0].shape[2];
  if (model.inputs[0].shape[3] !== 1) throw new Error('human emotion model: expected a gray input');
  return {
    tf,
    version: human.version,
    variant: 'emotion model alone, fed the face crop directly',
    backend: `tfjs ${tf.version_core}, ${tf.getBackend()}`,
    async predict(tensor) { // as human's gear/emotion.ts prepares a face
      const scores = tf.tidy(() => {
        const rgb = tf.div(tf.cast(tf.expandDims(tensor, 0), 'float32'), 255);
        const resized = tf.image.resizeBilinear(rgb, [side, side], false);
        const gray = tf.sum(tf.mul(resized, tf.tensor1d(HUMAN_RGB_WEIGHTS)), 3, true);
        return model.execute(tf.mul(tf.sub(gray, 0.5), 2));
      });
      const probs = await scores.data();
      tf.dispose(scores);
      return HUMAN_GRAY_LABELS[probs.indexOf(Math.max(...probs))];
    },
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let files = listImages(args.dataDir, args.glob).filter((_, i) => i % args.every === 0);
  if (args.sample) files = md5Order(files).slice(0, args.sample);
  if (!files.length) {
    console.error(`no images match ${args.dataDir}/*/${args.glob}`);
    process.exit(2);
  }
  const peer = args.peer === 'human' ? await humanPeer(args) : await faceApiPeer(args);
  const images = [];
  let seconds = 0;
  for (const file of files) {
    const padShare = args.mode === 'crop' ? null : args.pad;
    const tensor = await readTensor(peer.tf, path.join(args.dataDir, file), padShare);
    const start = performance.now();
    const pred = await peer.predict(tensor);
    seconds += (performance.now() - start) / 1000;
    peer.tf.dispose(tensor);
    images.push({ path: file, pred });
    if (images.length % 10 === 0) writeResult(args, peer, images, seconds, files.length);
  }
  writeResult(args, peer, images, seconds, files.length);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

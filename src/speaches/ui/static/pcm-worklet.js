// An AudioWorklet processor: microphone audio at the context's rate in, 16 kHz mono signed 16-bit PCM out.
//
// Resampling is band-limited interpolation: each output sample is the input convolved with a
// Blackman-windowed sinc centred on the output instant, cut off just below the lower Nyquist frequency.
// The same filter serves any input rate (44.1, 48, 96 kHz ...) and keeps speech above 8 kHz from
// aliasing into the band Whisper listens to. It runs here, at the context's own rate, because not every
// browser can connect a microphone to an AudioContext created at 16 kHz.
//
// The main thread gets `{ pcm: ArrayBuffer, level }` messages, each `frameSamples` samples long (100 ms by
// default); `level` is the frame's RMS, for a meter.

const LOBES = 16; // zero crossings of the sinc on each side: the filter's sharpness
const CUTOFF = 0.94; // of the output Nyquist frequency: a little headroom for the transition band
const PHASES = 512; // fractional positions the filter is tabulated at (1/512 of an input sample apart)

class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, frameSamples = 1600 } = options.processorOptions ?? {};
    this.step = sampleRate / targetRate; // input samples per output sample
    const stretch = Math.max(1, this.step); // widen the kernel when downsampling
    this.cutoff = (CUTOFF * 0.5) / stretch; // in cycles per input sample
    this.halfWidth = Math.ceil(LOBES * stretch); // in input samples
    this.table = this.buildTable();
    // Input not yet consumed, starting at input index `this.offset`; room for many render quanta.
    this.input = new Float32Array(4096 + 2 * this.halfWidth);
    this.inputLength = this.halfWidth; // leading zeros: the first output sample sits at t = 0
    this.position = this.halfWidth; // where the next output sample falls, in indices of `this.input`
    this.frame = new Int16Array(frameSamples);
    this.frameLength = 0;
    this.sumOfSquares = 0;
  }

  /** The filter, sampled for PHASES fractional positions: row p holds the taps for an output at base + p / PHASES. */
  buildTable() {
    const taps = 2 * this.halfWidth;
    const table = new Float32Array((PHASES + 1) * taps);
    for (let phase = 0; phase <= PHASES; phase += 1) {
      let sum = 0;
      for (let tap = 0; tap < taps; tap += 1) {
        const weight = this.kernel(phase / PHASES + this.halfWidth - 1 - tap);
        table[phase * taps + tap] = weight;
        sum += weight;
      }
      // Normalised: unity gain at DC whatever the phase.
      for (let tap = 0; tap < taps; tap += 1) table[phase * taps + tap] /= sum;
    }
    return table;
  }

  kernel(distance) {
    if (Math.abs(distance) >= this.halfWidth) return 0;
    const window = 0.42 + 0.5 * Math.cos((Math.PI * distance) / this.halfWidth) + 0.08 * Math.cos((2 * Math.PI * distance) / this.halfWidth);
    const sinc = distance === 0 ? 2 * this.cutoff : Math.sin(2 * Math.PI * this.cutoff * distance) / (Math.PI * distance);
    return sinc * window;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    if (this.inputLength + frames > this.input.length) this.compact();
    for (let i = 0; i < frames; i += 1) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.input[this.inputLength + i] = sum / channels.length; // mono: the mean of the channels
    }
    this.inputLength += frames;
    while (this.position + this.halfWidth < this.inputLength) {
      this.push(this.sampleAt(this.position));
      this.position += this.step;
    }
    return true;
  }

  sampleAt(position) {
    const base = Math.floor(position);
    const taps = 2 * this.halfWidth;
    const row = Math.round((position - base) * PHASES) * taps;
    const first = base - this.halfWidth + 1;
    let value = 0;
    for (let tap = 0; tap < taps; tap += 1) value += this.input[first + tap] * this.table[row + tap];
    return value;
  }

  compact() {
    // Keep only what the next output samples still reach back to.
    const keepFrom = Math.max(0, Math.floor(this.position - this.halfWidth) - 1);
    this.input.copyWithin(0, keepFrom, this.inputLength);
    this.inputLength -= keepFrom;
    this.position -= keepFrom;
  }

  push(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.sumOfSquares += clamped * clamped;
    this.frame[this.frameLength] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.frameLength += 1;
    if (this.frameLength === this.frame.length) this.emit(this.frameLength);
  }

  emit(length) {
    const pcm = this.frame.slice(0, length).buffer;
    const level = Math.sqrt(this.sumOfSquares / length);
    this.port.postMessage({ pcm, level }, [pcm]);
    this.frameLength = 0;
    this.sumOfSquares = 0;
  }
}

registerProcessor("pcm-16k", Pcm16kProcessor);

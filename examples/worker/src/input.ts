/**
 * The model's inputs, typed. `test/client.test.ts` checks `INPUT_SPEC` against `.cog/openapi_schema.json`
 * (every input, choice, range, default and length limit), so a change in the model fails the tests until it
 * is made here too.
 */

export const STEMS_MODES = ["vocals_instrumental", "all_4", "all_6", "guitar", "guitar_only"] as const;
export const OUTPUT_FORMATS = ["wav", "flac", "mp3"] as const;
export const SAMPLE_RATES = [44100, 48000] as const;
export const WAV_BIT_DEPTHS = ["16", "24", "32-float"] as const;
export const MP3_BITRATES = [128, 192, 256, 320] as const;

/** MVSep Mega-53's heads: the names `extra_stems` takes. */
export const EXTRA_STEM_NAMES = [
  "accordion", "acoustic-guitar", "back-vocal", "banjo", "bass", "bassoon", "bells", "bowed_strings", "brass",
  "cello", "clarinet", "congas", "digital-piano", "dobro", "double-bass", "drums", "electric-guitar", "flute",
  "french-horn", "glockenspiel", "guitar", "harmonica", "harp", "harpsichord", "hh", "keys", "kick",
  "lead-vocal", "mandolin", "marimba", "oboe", "organ", "percussion", "piano", "saxophone", "sitar", "snare",
  "strings", "synth", "tambourine", "timpani", "toms", "triangle", "trombone", "trumpet", "tuba", "ukulele",
  "viola", "violin", "vocal", "wind", "wind-chimes", "woodwind",
] as const;

/** The longest `extra_stems` the model takes: every name once, separated by a comma and a space. */
export const EXTRA_STEMS_MAX_LENGTH = EXTRA_STEM_NAMES.join(", ").length;

export interface SeparationInput {
  /** The song: a URL (or data URL) to any common audio or video file. */
  audio: string;
  /** `guitar_only`: just `guitar` and `no_guitar` (mix − guitar), from Mega-53 alone. */
  stems?: (typeof STEMS_MODES)[number];
  /** Comma-separated Mega-53 instruments added after the mode's stems, e.g. `"piano, kick"`. */
  extra_stems?: string;
  output_format?: (typeof OUTPUT_FORMATS)[number];
  /** BS-RoFormer chunk length in seconds, 4–30. */
  chunk_size?: number;
  /** Overlap between chunks in seconds, 1–8, below chunk_size. */
  overlap?: number;
  sample_rate?: (typeof SAMPLE_RATES)[number];
  wav_bit_depth?: (typeof WAV_BIT_DEPTHS)[number];
  mp3_bitrate?: (typeof MP3_BITRATES)[number];
}

type Spec = {
  required?: true;
  default?: string | number;
  choices?: readonly (string | number)[];
  range?: readonly [number, number];
  maxLength?: number;
};

/** Every input with its default, choices, range or length limit: the part of the type a test compares with the schema. */
export const INPUT_SPEC = {
  audio: { required: true },
  stems: { default: "vocals_instrumental", choices: STEMS_MODES },
  extra_stems: { default: "", maxLength: EXTRA_STEMS_MAX_LENGTH },
  output_format: { default: "wav", choices: OUTPUT_FORMATS },
  chunk_size: { default: 8, range: [4, 30] },
  overlap: { default: 4, range: [1, 8] },
  sample_rate: { default: 44100, choices: SAMPLE_RATES },
  wav_bit_depth: { default: "24", choices: WAV_BIT_DEPTHS },
  mp3_bitrate: { default: 320, choices: MP3_BITRATES },
} as const satisfies Record<keyof SeparationInput, Spec>;

/** The modes whose stems include `guitar`. */
const GUITAR_MODES: ReadonlySet<string> = new Set(["guitar", "guitar_only", "all_6"]);

/** The part of a prediction's input that decides the transcription stem, as a webhook carries it. */
export interface ModeInput {
  stems?: string | null;
  extra_stems?: string | null;
}

/**
 * The stem FretWise transcribes: `guitar` when the prediction's mode gives one (`stems` = `guitar`,
 * `guitar_only` or `all_6`, or `guitar` among `extra_stems`), else `instrumental`. Without an input (a
 * self-hosted runtime's webhooks carry none) the guitar is assumed. `examples/webhook_receiver.py` applies the
 * same rule; `test/fixtures/transcription-stem.json` holds the cases both test.
 */
export function transcriptionStem(input: ModeInput | null | undefined): "guitar" | "instrumental" {
  if (input === null || input === undefined) return "guitar";
  const extras = (input.extra_stems ?? "").split(",").map((name) => name.trim());
  return GUITAR_MODES.has(input.stems ?? "") || extras.includes("guitar") ? "guitar" : "instrumental";
}

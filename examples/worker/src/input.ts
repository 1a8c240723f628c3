/**
 * The model's inputs, typed. `test/input.test.ts` checks `INPUT_SPEC` against `.cog/openapi_schema.json`,
 * so a new input, mode or choice in the model fails the tests until it is added here.
 */

export const STEMS_MODES = ["vocals_instrumental", "all_4", "all_6", "guitar"] as const;
export const OUTPUT_FORMATS = ["wav", "flac", "mp3"] as const;
export const SAMPLE_RATES = [44100, 48000] as const;
export const WAV_BIT_DEPTHS = ["16", "24", "32-float"] as const;
export const MP3_BITRATES = [128, 192, 256, 320] as const;

export interface SeparationInput {
  /** The song: a URL (or data URL) to any common audio or video file. */
  audio: string;
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

type Spec = { required?: true; choices?: readonly (string | number)[]; range?: readonly [number, number] };

/** Every input with its choices or range: the part of the type a test compares with the schema. */
export const INPUT_SPEC = {
  audio: { required: true },
  stems: { choices: STEMS_MODES },
  extra_stems: {},
  output_format: { choices: OUTPUT_FORMATS },
  chunk_size: { range: [4, 30] },
  overlap: { range: [1, 8] },
  sample_rate: { choices: SAMPLE_RATES },
  wav_bit_depth: { choices: WAV_BIT_DEPTHS },
  mp3_bitrate: { choices: MP3_BITRATES },
} as const satisfies Record<keyof SeparationInput, Spec>;

/**
 * The stem FretWise transcribes for these inputs: `guitar` when the prediction brings one (the guitar and
 * all_6 modes, or `guitar` among the extra stems), else `instrumental`.
 */
export function transcriptionStem(input: Partial<SeparationInput>): "guitar" | "instrumental" {
  const extras = (input.extra_stems ?? "").split(",").map((name) => name.trim());
  const bringsGuitar = input.stems === "guitar" || input.stems === "all_6" || extras.includes("guitar");
  return bringsGuitar ? "guitar" : "instrumental";
}

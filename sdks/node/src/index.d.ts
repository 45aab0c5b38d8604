import type {
  EvaluationContext,
  JsonValue,
  Logger,
  OpenFeatureEventEmitter,
  Provider,
  ResolutionDetails,
  TrackingEventDetails,
} from "@openfeature/server-sdk";

export interface RollgateProviderOptions {
  /** The control plane, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** A `read` token that reaches `environment`. */
  token: string;
  /** The environment whose flags to serve. */
  environment: string;
  /** A snapshot file served from the start; one that cannot be read or compiled throws. */
  bootstrap?: string;
  /** Where each new snapshot is written (atomically), for the next start's bootstrap. */
  saveTo?: string;
  /** How long `initialize` waits for a first snapshot. Default 5000. */
  initializeTimeoutMs?: number;
  /** The longest wait between reconnection attempts. Default 30000. */
  maxBackoffMs?: number;
  /** A stream silent this long is taken as dead. Default 45000. */
  streamIdleTimeoutMs?: number;
  /** How often counts are reported; `null` counts and reports nothing. Default 10000. */
  metricsIntervalMs?: number | null;
  /** Where warnings go (a refused snapshot, a dropped metrics batch). */
  logger?: Pick<Logger, "warn">;
}

export declare class RollgateProvider implements Provider {
  constructor(options: RollgateProviderOptions);
  readonly metadata: { readonly name: "rollgate" };
  readonly runsOn: "server";
  readonly events: OpenFeatureEventEmitter;
  readonly hooks: [];
  /** The version of the snapshot served, if any. */
  readonly version: number | undefined;
  initialize(context?: EvaluationContext): Promise<void>;
  onClose(): Promise<void>;
  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext): Promise<ResolutionDetails<boolean>>;
  resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext): Promise<ResolutionDetails<string>>;
  resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext): Promise<ResolutionDetails<number>>;
  resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext): Promise<ResolutionDetails<T>>;
  /** Counts `details.value` (default 1) of the metric `trackingEventName` for `details.flag`'s `details.variant`. */
  track(trackingEventName: string, context: EvaluationContext, details: TrackingEventDetails & { flag: string; variant: string }): void;
  /** Reports the counts now. */
  flush(): Promise<void>;
}

// Transfer speed and time left, from (time, bytes done) samples of the
// status stream. Pure: the caller passes the clock.

export interface Sample { t: number; bytes: number }

/** Keeps the last few seconds of samples of one round's progress. */
export class SpeedMeter {
  private samples: Sample[] = [];

  constructor(private readonly windowMs = 5000) {}

  /** Adds a sample; a drop in bytes (a new round) starts over. */
  add(t: number, bytes: number): void {
    const last = this.samples[this.samples.length - 1];
    if (last && bytes < last.bytes) this.samples = [];
    this.samples.push({ t, bytes });
    while (this.samples.length > 2 && t - this.samples[0].t > this.windowMs) this.samples.shift();
  }

  /** Bytes per second over the window, or null without enough data. */
  rate(): number | null {
    if (this.samples.length < 2) return null;
    const a = this.samples[0];
    const b = this.samples[this.samples.length - 1];
    const dt = (b.t - a.t) / 1000;
    if (dt <= 0.2) return null;
    return (b.bytes - a.bytes) / dt;
  }

  /** Seconds until `total`, or null when the rate is unknown or zero. */
  eta(total: number): number | null {
    const r = this.rate();
    const last = this.samples[this.samples.length - 1];
    if (r === null || r <= 0 || !last) return null;
    return Math.max(0, (total - last.bytes) / r);
  }

  reset(): void {
    this.samples = [];
  }
}

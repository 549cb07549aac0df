import { describe, expect, it } from 'vitest';
import { SpeedMeter } from './speed';

describe('SpeedMeter', () => {
  it('needs two samples far enough apart', () => {
    const m = new SpeedMeter();
    expect(m.rate()).toBeNull();
    m.add(0, 0);
    expect(m.rate()).toBeNull();
    m.add(100, 1000);
    expect(m.rate()).toBeNull();
  });

  it('measures bytes per second over a sliding window and estimates time left', () => {
    const m = new SpeedMeter(5000);
    for (let t = 0; t <= 10_000; t += 1000) m.add(t, t * 1000); // 1 MB/s
    expect(m.rate()).toBeCloseTo(1_000_000);
    expect(m.eta(20_000_000)).toBeCloseTo(10);
  });

  it('follows a change of speed within the window', () => {
    const m = new SpeedMeter(2000);
    let bytes = 0;
    for (let t = 0; t <= 10_000; t += 500) {
      bytes += t < 5000 ? 1000 : 4000;
      m.add(t, bytes);
    }
    expect(m.rate()).toBeCloseTo(8000);
  });

  it('starts over when a new round begins', () => {
    const m = new SpeedMeter();
    m.add(0, 0);
    m.add(1000, 5000);
    m.add(2000, 10);
    expect(m.rate()).toBeNull();
    expect(m.eta(100)).toBeNull();
  });
});

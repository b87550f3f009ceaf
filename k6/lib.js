// Shared settings for hulk's k6 suites. Every suite reads BASE_URL, DURATION and RATE from the
// environment so `bench/load.py` can bound each run; thresholds encode the service objectives, so k6
// exits non-zero when an objective is missed.
export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const DURATION = __ENV.DURATION || '30s';
export const RATE = parseInt(__ENV.RATE || '500', 10);
export const VUS = parseInt(__ENV.VUS || '64', 10);
export const JSON_HEADERS = { headers: { 'Content-Type': 'application/json' } };

export function constantRate(rate) {
  return {
    executor: 'constant-arrival-rate',
    rate: rate,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: VUS,
    maxVUs: VUS * 2,
  };
}

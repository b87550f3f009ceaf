// Soak: half of peak for a long time (DURATION, default 10m via bench/load.py), no errors allowed.
// Memory growth is checked by bench/load.py, which samples the service's RSS during the run.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, JSON_HEADERS, RATE, constantRate } from './lib.js';

export const options = {
  scenarios: { soak: constantRate(RATE) },
  thresholds: {
    http_req_failed: ['rate==0'],
    'http_req_duration{expected_response:true}': ['p(95)<20', 'p(99)<100'],
    checks: ['rate==1'],
  },
};

export default function () {
  const r = http.post(`${BASE_URL}/v1/tasks`, JSON.stringify({ type: 'echo', payload: { soak: true } }), JSON_HEADERS);
  check(r, { 'accepted (202)': (res) => res.status === 202 });
  if (__ITER % 10 === 0) {
    check(http.get(`${BASE_URL}/health`), { 'alive (200)': (res) => res.status === 200 });
  }
}

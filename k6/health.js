// GET /health at a fixed concurrency (VUS, default 64), as fast as the service answers.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, DURATION, VUS } from './lib.js';

export const options = {
  vus: VUS,
  duration: DURATION,
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<20', 'p(99)<50'],
  },
};

export default function () {
  const r = http.get(`${BASE_URL}/health`);
  check(r, { 'alive (200)': (res) => res.status === 200 });
}

// Mixed reads and writes: 1 submit for 3 status reads of recent tasks, plus runtime reads.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, JSON_HEADERS, RATE, constantRate } from './lib.js';

export const options = {
  scenarios: { mixed: constantRate(RATE) },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{expected_response:true}': ['p(95)<15', 'p(99)<60'],
    checks: ['rate>0.999'],
  },
};

const ids = [];

export default function () {
  if (ids.length === 0 || Math.random() < 0.25) {
    const r = http.post(`${BASE_URL}/v1/tasks`, JSON.stringify({ type: 'echo', payload: { i: __ITER } }), JSON_HEADERS);
    check(r, { 'accepted (202)': (res) => res.status === 202 });
    if (r.status === 202) {
      ids.push(r.json('id'));
      if (ids.length > 100) ids.shift();
    }
  } else if (Math.random() < 0.9) {
    const id = ids[Math.floor(Math.random() * ids.length)];
    const r = http.get(`${BASE_URL}/v1/tasks/${id}`);
    check(r, { 'read (200)': (res) => res.status === 200 });
  } else {
    const r = http.get(`${BASE_URL}/v1/runtime`);
    check(r, { 'runtime (200)': (res) => res.status === 200 });
  }
}

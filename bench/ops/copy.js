/** bench entry of a device-to-device copy of K: the yardstick every op is compared with. */
'use strict';

const { bind } = require('../timer');
const { bytes } = require('../shapes');
const { compareExact } = require('../compare');

module.exports = [
  {
    name: 'copy',
    /** K read and written */
    floor: (c) => 2 * bytes.keys(c),
    runner: (kv, x, w, device) => bind((k) => k.to(device), x.keys()),
    check: (c) => c.run((x, dev) => x.k.to(dev)).map(([who, t]) => compareExact(`${who} copy`, t.toArray(), c.host.k)),
  },
];

/** bench entry of a device-to-device copy of K: the yardstick every op is compared with. */
'use strict';

const { bytes } = require('../shapes');
const { compareExact } = require('../compare');

module.exports = [
  {
    name: 'copy',
    /** K read and written */
    floor: (c) => 2 * bytes.keys(c),
    runner: (kv, x, w, device) => {
      const k = x.keys();
      return () => k.to(device);
    },
    check: (c) => c.run((x, dev) => x.k.to(dev)).map(([who, t]) => compareExact(`${who} copy`, t.toArray(), c.host.k)),
  },
];

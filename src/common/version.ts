/** This build's version, as package.json says (a unit test holds them equal). */
export const raftblockVersion = '0.1.0';

-- Manifests: <PREFIX>/manifests/dt=<yyyy-mm-dd>/run=<run-id>/manifest.json (one JSON line, written last)
CREATE EXTERNAL TABLE IF NOT EXISTS inventory_manifests (
  format string,
  runid string,
  scheduledtime string,
  triggerid string,
  reason string,
  accountid string,
  region string,
  destination string,
  types array<struct<typename:string,schemaversion:string,schemaversions:array<string>,source:string,nodes:bigint,rows:bigint,parts:int>>,
  nodecount bigint,
  nodes array<string>,
  freshness struct<thresholdhours:int,referencetime:string,stalenodes:bigint,stale:array<string>>,
  diff struct<previousrunid:string,key:string,nodeschanged:bigint,nodesnew:bigint,nodesgone:bigint,added:bigint,removed:bigint,upgraded:bigint,downgraded:bigint>,
  timing struct<startedat:string,finishedat:string,durationms:bigint,invocations:bigint>
)
PARTITIONED BY (dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<BUCKET>/<PREFIX>/manifests/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/manifests/dt=${dt}/'
);

-- Diffs: <PREFIX>/diffs/dt=<yyyy-mm-dd>/run=<run-id>/diff.json (one row per changed node)
CREATE EXTERNAL TABLE IF NOT EXISTS inventory_diffs (
  resourceid string,
  node string,
  added array<struct<name:string,version:string>>,
  removed array<struct<name:string,version:string>>,
  upgraded array<struct<name:string,`from`:string,`to`:string>>,
  downgraded array<struct<name:string,`from`:string,`to`:string>>
)
PARTITIONED BY (dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<BUCKET>/<PREFIX>/diffs/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/diffs/dt=${dt}/'
);
